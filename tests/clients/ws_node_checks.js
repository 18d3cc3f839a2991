// Protocol checks of the /ws/ endpoint with Node's `ws` package (not seed code):
//   node ws_node_checks.js <running cuid> <unknown cuid>
// with CM_URL / CM_USER / CM_PASS in the environment.  Every check has its own timeout; the
// script prints one line "RESULT <json>" {name: {...what was observed...}} and the python
// side (tests/integration/t151_ws_node.py) asserts on it.
'use strict';
const WebSocket = require('ws');

const BASE = process.env.CM_URL.replace(/^http/, 'ws');
const AUTH = 'Basic ' + Buffer.from(`${process.env.CM_USER}:${process.env.CM_PASS}`).toString('base64');

function url(path, params) {
  const q = Object.entries(params || {})
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
  return BASE + path + (q ? '?' + q : '');
}

function decode(f) {
  if (f.encoding === 'base64') return Buffer.from(f.data, 'base64');
  return Buffer.from(String(f.data), 'utf8');
}

// Opens a session and drives it with `script(ctx)`; resolves with what was observed once the
// socket is closed (or after `timeoutMs`, with timedOut: true).
function session(path, params, script, opts = {}) {
  const timeoutMs = opts.timeoutMs || 15000;
  return new Promise((resolve) => {
    const obs = {
      frames: [], stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), exitCode: null,
      errors: [], closeCode: null, timedOut: false, wsError: null, nonJson: [], binaryFrames: 0,
      httpStatus: null, httpBody: null, opened: false,
    };
    const headers = opts.headers === undefined ? { Authorization: AUTH } : opts.headers;
    const ws = new WebSocket(url(path, params), { headers });
    let done = false;
    const waiters = [];
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      obs.frames = obs.frames.slice(0, 200);
      obs.stdout_b64 = obs.stdout.toString('base64');
      obs.stderr_b64 = obs.stderr.toString('base64');
      obs.stdout = obs.stdout.toString('utf8');
      obs.stderr = obs.stderr.toString('utf8');
      resolve(obs);
    };
    const timer = setTimeout(() => {
      obs.timedOut = true;
      try { ws.terminate(); } catch (e) { /* ignore */ }
      finish();
    }, timeoutMs);
    const check = () => {
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].pred()) {
          const w = waiters.splice(i, 1)[0];
          w.resolve(true);
        }
      }
    };
    const ctx = {
      ws, obs,
      send: (o) => ws.send(typeof o === 'string' ? o : JSON.stringify(o)),
      // resolves true when pred() holds, false after ms
      until: (pred, ms = 10000) => new Promise((res) => {
        if (pred()) return res(true);
        const w = { pred, resolve: res };
        waiters.push(w);
        setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) { waiters.splice(i, 1); res(false); }
        }, ms);
      }),
    };
    ws.on('unexpected-response', (req, res) => {
      obs.httpStatus = res.statusCode;
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        obs.httpBody = body;
        try { obs.httpJson = JSON.parse(body); } catch (e) { obs.httpJson = null; }
        try { req.destroy(); } catch (e) { /* ignore */ }
        finish();
      });
      res.on('error', () => finish());
    });
    ws.on('open', () => {
      obs.opened = true;
      Promise.resolve().then(() => script(ctx)).catch((e) => { obs.scriptError = String(e); });
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) { obs.binaryFrames++; return; }
      let f;
      try { f = JSON.parse(data.toString()); } catch (e) { obs.nonJson.push(data.toString().slice(0, 200)); return; }
      obs.frames.push(f);
      if (f.type === 'stdout') obs.stdout = Buffer.concat([obs.stdout, decode(f)]);
      else if (f.type === 'stderr') obs.stderr = Buffer.concat([obs.stderr, decode(f)]);
      else if (f.type === 'exit') obs.exitCode = f.code;
      else if (f.type === 'error') obs.errors.push(f.error);
      check();
    });
    ws.on('error', (e) => { obs.wsError = String(e && e.message || e); if (!obs.opened && obs.httpStatus === null) finish(); });
    ws.on('close', (code) => { obs.closeCode = code; finish(); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const cuid = process.argv[2];
  const unknown = process.argv[3];
  const R = {};

  // exit code of the shell, then a normal close
  R.exit = await session(`/ws/${cuid}`, { cols: 80, rows: 24 }, async (c) => {
    c.send({ type: 'stdin', data: 'exit 5\n', encoding: 'utf8' });
  });

  // stdout and stderr apart without a TTY
  R.stderr = await session(`/ws/${cuid}`, { tty: 0, command: 'echo out; echo err >&2' }, async () => {});

  // a signal: TERM to a sleep, with and without TTY
  for (const tty of [1, 0]) {
    R[`term_tty${tty}`] = await session(`/ws/${cuid}`,
      { tty, command: JSON.stringify(['sh', '-c', 'echo ready; exec sleep 1000']) }, async (c) => {
        const ready = await c.until(() => c.obs.stdout.includes('ready'));
        c.obs.ready = ready;
        c.send({ type: 'signal', name: 'TERM' });
      });
  }

  // bytes that are not UTF-8 arrive base64-encoded
  R.binary = await session(`/ws/${cuid}`, { tty: 0, command: "printf '\\377\\376abc'" }, async () => {});

  // a bad frame gets an error frame and the session keeps working
  R.badframe = await session(`/ws/${cuid}`, { tty: 0, command: JSON.stringify(['cat']) }, async (c) => {
    c.send('this is not json');
    c.obs.gotError = await c.until(() => c.obs.errors.length >= 1);
    c.send({ type: 'stdin', data: 'still-alive\n' });
    c.obs.echoed = await c.until(() => c.obs.stdout.includes('still-alive\n'));
    await sleep(100);
    c.send({ type: 'eof' });
  });

  // errors before the upgrade
  R.notfound = await session(`/ws/${unknown}`, {}, async () => {});
  R.noauth = await session(`/ws/${cuid}`, {}, async () => {}, { headers: {} });

  console.log('RESULT ' + JSON.stringify(R));
}

main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ fatal: String(e && e.stack || e) }));
  process.exitCode = 1;
}).finally(() => setTimeout(() => process.exit(), 2000).unref());
