// The Node app of the fault benchmark: the same routes as faults_asgi.py.
// GET / hello; /crash process.exit(1); /hang a busy loop (the event loop never returns);
// /grow?mb=N keeps N MiB more for good; /log?bytes=N one line of N bytes to stderr, then hello.
// `node faults.js` with BENCH_WORKERS=N is a cluster primary forking N workers and forking a new one
// when one exits (the cluster module's documented pattern); under `pm2 start -i N` every process is a worker.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const BODY = Buffer.from('hello, world\n');
const PORT = Number(process.env.BENCH_PORT || 8000);
const HOST = process.env.BENCH_HOST || '127.0.0.1';
const HANG_MS = 3600 * 1000; // longer than any fault; the harness kills what is left afterwards
const GROW_LIMIT_MB = 2048;
const LOG_LIMIT_BYTES = 65536;
const leak = [];

function reply(res) {
  res.writeHead(200, {
    'Content-Type': 'text/plain',
    'Content-Length': BODY.length,
    'X-Worker': String(process.pid),
  });
  res.end(BODY);
}

function handle(req, res) {
  const url = new URL(req.url, 'http://bench');
  if (url.pathname === '/crash') process.exit(1);
  if (url.pathname === '/hang') {
    const end = Date.now() + HANG_MS;
    while (Date.now() < end) { /* the bug under test: a loop that never yields */ }
  } else if (url.pathname === '/grow') {
    const mb = Math.min(Number(url.searchParams.get('mb') || 0), GROW_LIMIT_MB);
    leak.push(Buffer.alloc(mb * 1024 * 1024, 1));
  } else if (url.pathname === '/log') {
    const size = Math.min(Number(url.searchParams.get('bytes') || 60), LOG_LIMIT_BYTES);
    console.error(`served /log in worker ${process.pid} `.padEnd(size - 1, '.'));
  }
  reply(res);
}

function serve() {
  const server = http.createServer(handle);
  server.listen(PORT, HOST, () => { if (process.send) process.send('ready'); });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

const workers = Number(process.env.BENCH_WORKERS || 0);
if (cluster.isPrimary && workers > 0) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let stopping = false;
  cluster.on('exit', () => { if (!stopping) cluster.fork(); });
  const stopAll = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].kill('SIGTERM');
    cluster.disconnect(() => process.exit(0));
  };
  process.on('SIGTERM', stopAll);
  process.on('SIGINT', stopAll);
} else {
  serve();
}
