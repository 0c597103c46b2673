// The Node app: the same routes, body and X-Worker header as the Python apps.
// `node hello.js` with BENCH_WORKERS=N is a cluster primary forking N workers;
// under `pm2 start -i N` every process is a worker (pm2's daemon is the primary).
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const BODY = Buffer.from('hello, world\n');
const PORT = Number(process.env.BENCH_PORT || 8000);
const HOST = process.env.BENCH_HOST || '127.0.0.1';

function handle(req, res) {
  const reply = () => {
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': BODY.length,
      'X-Worker': String(process.pid),
    });
    res.end(BODY);
  };
  if (req.url === '/sleep') setTimeout(reply, 10);
  else reply();
}

function serve() {
  const server = http.createServer(handle);
  server.listen(PORT, HOST, () => { if (process.send) process.send('ready'); });
  // Graceful stop as pm2's docs ask for: stop accepting, let in-flight requests finish, exit.
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

const workers = Number(process.env.BENCH_WORKERS || 0);
if (cluster.isPrimary && workers > 0) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let stopping = false;
  // A crashed worker is replaced, as pm2 would.
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
