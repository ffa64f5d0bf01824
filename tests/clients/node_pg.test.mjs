// node-postgres (pg) connects with SCRAM, queries with parameters and reads typed values.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.env.KPITABLES_BIN ?? path.join(root, 'target', 'debug', 'kpitables');
let server;
let port;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}

async function waitForPort(p) {
  for (let i = 0; i < 1200; i++) {
    if (server.exitCode !== null) throw new Error(`kpitables exited with ${server.exitCode}`);
    const ok = await new Promise((resolve) => {
      const c = net.connect(p, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error('kpitables did not start');
}

before(async () => {
  port = await freePort();
  server = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`], { cwd: root, stdio: 'ignore' });
  await waitForPort(port);
});

after(() => { server.kill(); });

function client() {
  return new pg.Client({ host: '127.0.0.1', port, user: 'analyst', password: 'analyst', database: 'kpitables' });
}

test('parameterized metric query returns typed values', async () => {
  const c = client();
  await c.connect();
  try {
    const res = await c.query(
      'SELECT region, orders, revenue, order_date__month FROM sales WHERE region = $1 AND order_date__year = $2 ORDER BY order_date__month',
      ['South', '2024-01-01'],
    );
    assert.equal(res.rows.length, 12);
    assert.equal(res.rows[0].region, 'South');
    assert.equal(typeof res.rows[0].orders, 'string'); // bigint arrives as text in pg by default
    assert.ok(Number(res.rows[0].orders) > 0);
    assert.match(res.rows[0].revenue, /^\d+\.\d{2}$/);
    assert.ok(res.rows[0].order_date__month instanceof Date);
    const fields = res.fields.map((f) => [f.name, f.dataTypeID]);
    assert.deepEqual(fields, [['region', 25], ['orders', 20], ['revenue', 1700], ['order_date__month', 1082]]);
  } finally {
    await c.end();
  }
});

test('errors carry SQLSTATE and the connection keeps working', async () => {
  const c = client();
  await c.connect();
  try {
    await assert.rejects(c.query('SELECT revnue FROM sales'), (e) => e.code === '42703' && /did you mean "revenue"/.test(e.hint));
    const res = await c.query('SELECT 1 AS one');
    assert.equal(res.rows[0].one, 1);
  } finally {
    await c.end();
  }
});
