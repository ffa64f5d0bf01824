// node-postgres over TLS: node node_tls.mjs <port> <ca.crt> <servername>
// Prints a JSON line: {"ok": true, "region": ..., "tls": true} or {"ok": false, "error": ...}.
import fs from 'node:fs';
import pg from 'pg';

const [port, ca, servername] = process.argv.slice(2);
const client = new pg.Client({
  host: '127.0.0.1', port: Number(port), user: 'exec', password: 'exec', database: 'kpitables',
  ssl: { ca: fs.readFileSync(ca, 'utf8'), servername, rejectUnauthorized: true },
});
try {
  await client.connect();
  const res = await client.query("SELECT region FROM sales WHERE region = $1", ['East']);
  console.log(JSON.stringify({ ok: true, region: res.rows[0].region, tls: client.connection.stream.encrypted === true }));
  await client.end();
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e.message) }));
}
