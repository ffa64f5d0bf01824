"""Real warehouse servers for the pushdown tests, started by the test harness itself.

- PostgreSQL: `initdb` + `pg_ctl` in a temporary directory on a free port, run as the
  `postgres` user when the tests run as root (PostgreSQL refuses root), every statement
  and connection logged (`log_statement = all`, `log_connections`) so a test can read
  what the warehouse received.
- MariaDB: `mariadb-install-db` + `mariadbd` in a temporary directory on a free port, run
  as the `mysql` user when the tests run as root, with the general query log on.

Each server is stopped (and can be stopped and started again mid-test) through the
object returned.
"""

import glob
import os
import pathlib
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(user: str, argv: list[str]) -> list[str]:
    """Run argv as `user` when we are root (servers refuse to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *argv]
    return argv


def _own(path: pathlib.Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _wait_port(port: int, what: str, log: pathlib.Path) -> None:
    # Readiness wait (not a timing assertion).
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}:\n{log.read_text() if log.exists() else ''}")


class Postgres:
    """A PostgreSQL server of our own in a temporary directory."""

    def __init__(self):
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not candidates:
            raise RuntimeError("PostgreSQL server binaries not found (tests/run-all.sh installs postgresql)")
        self.bin = pathlib.Path(candidates[-1]).parent
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="kp-pg-"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.user = "postgres"
        _own(self.dir, self.user)
        subprocess.run(
            _as_user(self.user, [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                 "-A", "trust", "-E", "UTF8", "--no-locale"]),
            check=True, capture_output=True,
        )
        self.start()
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE shop"],
            check=True, capture_output=True,
        )
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/shop"
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=shop"

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
                   "-c log_statement=all -c log_connections=on -c logging_collector=off -c fsync=off")
        subprocess.run(
            _as_user(self.user, [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                 "-o", options, "-w", "start"]),
            check=True, capture_output=True,
        )
        _wait_port(self.port, "PostgreSQL", self.log)

    def stop(self) -> None:
        subprocess.run(
            _as_user(self.user, [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            check=True, capture_output=True,
        )

    def statements(self) -> list[str]:
        """Statements the server received, from its log."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "LOG:  statement: " in line:
                out.append(line.split("LOG:  statement: ", 1)[1])
        return out

    def connections(self) -> int:
        """How many connections the server has accepted, from its log."""
        return self.log.read_text(errors="replace").count("LOG:  connection authorized: ")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class MariaDB:
    """A MariaDB server of our own in a temporary directory."""

    def __init__(self):
        install = shutil.which("mariadb-install-db")
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if not install or not os.path.exists(server):
            raise RuntimeError("MariaDB server not found (tests/run-all.sh installs mariadb-server)")
        self.server = server
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="kp-maria-"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.general_log = self.dir / "general.log"
        self.socket = self.dir / "mysqld.sock"
        # Temporary tables in a directory of this server's own: in /tmp, another
        # server's start removes the files of this one's (`Error on delete of
        # '/tmp/#sql-temptable-...'`).
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir()
        self.port = free_port()
        self.user = "mysql"
        _own(self.dir, self.user)
        subprocess.run(
            _as_user(self.user, [install, "--no-defaults", f"--datadir={self.data}",
                                 "--auth-root-authentication-method=normal", "--skip-test-db"]),
            check=True, capture_output=True,
        )
        self.proc = None
        self.start()
        subprocess.run(
            ["mariadb", "--no-defaults", "-S", str(self.socket), "-u", "root", "-e",
             "CREATE DATABASE shop; CREATE USER kp@'%' IDENTIFIED BY 'kp-secret'; "
             "GRANT ALL ON *.* TO kp@'%'"],
            check=True, capture_output=True,
        )
        # Time zone tables, for CONVERT_TZ with zone names (as the docs ask of a MySQL source).
        zones = subprocess.run(["mariadb-tzinfo-to-sql", "/usr/share/zoneinfo"],
                               check=True, capture_output=True).stdout
        subprocess.run(["mariadb", "--no-defaults", "-S", str(self.socket), "-u", "root", "mysql"],
                       input=zones, check=True, capture_output=True)
        self.password = "kp-secret"
        self.url = f"mysql://kp:{self.password}@127.0.0.1:{self.port}/shop"
        self.url_without_password = f"mysql://kp@127.0.0.1:{self.port}/shop"

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                _as_user(self.user, [self.server, "--no-defaults", f"--datadir={self.data}",
                                     f"--port={self.port}", "--bind-address=127.0.0.1",
                                     f"--socket={self.socket}", f"--pid-file={self.dir / 'mysqld.pid'}",
                                     f"--tmpdir={self.tmp}",
                                     "--general-log=1", f"--general-log-file={self.general_log}",
                                     "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"]),
                stdout=out, stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, "MariaDB", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=120)
            self.proc = None

    def connect(self):
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user="kp", password=self.password,
                               database="shop", autocommit=True, init_command="SET time_zone = '+00:00'")

    def statements(self) -> list[str]:
        """Statements the server received, from its general query log."""
        # Lines look like "<time>\t   <id> Query\t<statement>", or "\t\t   <id> Query\t..."
        out = []
        for line in self.general_log.read_text(errors="replace").splitlines():
            found = re.search(r"\s\d+ Query\t(.*)$", line)
            if found:
                out.append(found.group(1))
        return out

    def connections(self) -> int:
        """How many connections the server has accepted, from its general query log."""
        return len(re.findall(r"\s\d+ Connect\t", self.general_log.read_text(errors="replace")))

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
