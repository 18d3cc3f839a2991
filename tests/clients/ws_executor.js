// Seed 004 "WebSocket Integration / Non-Interactive Command Execution" (Node.js + ws), kept as
// written in the seed: the seed text lost its indentation and carries stray `|` / `||` lines
// between code lines; below is that code with the stray lines removed and the indentation put
// back, nothing else changed.  Only the usage lines at the end are replaced by a small driver
// for the integration tests:
//   node ws_executor.js <cuid> <command>
// with CM_URL / CM_USER / CM_PASS in the environment.  Prints one line "RESULT <json>" with
// what execute() resolved to (or the error it rejected with).
// Used by tests/integration/t151_ws_node.py.

// ---- seed code (unchanged) ----
const WebSocket = require('ws');

class ContainerExecutor {
  constructor(baseUrl, cuid, username, password) {
    this.wsUrl = `ws://${baseUrl.replace('http://', '')}/ws/${cuid}`;
    this.auth = Buffer.from(`${username}:${password}`).toString('base64');
  }

  async execute(command) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.wsUrl, {
        headers: {
          'Authorization': `Basic ${this.auth}`
        }
      });

      let output = '';
      let errorOutput = '';

      ws.on('open', () => {
        // Send command
        ws.send(JSON.stringify({
          type: 'stdin',
          data: command + '\n',
          encoding: 'utf8'
        }));

        // Send EOF/exit after command
        setTimeout(() => {
          ws.send(JSON.stringify({
            type: 'stdin',
            data: 'exit\n',
            encoding: 'utf8'
          }));
        }, 100);
      });

      ws.on('message', (data) => {
        const msg = JSON.parse(data.toString());

        if (msg.type === 'stdout') {
          output += msg.encoding === 'base64'
            ? Buffer.from(msg.data, 'base64').toString()
            : msg.data;
        } else if (msg.type === 'stderr') {
          errorOutput += msg.encoding === 'base64'
            ? Buffer.from(msg.data, 'base64').toString()
            : msg.data;
        } else if (msg.type === 'exit') {
          ws.close();
          resolve({
            exitCode: msg.code,
            stdout: output,
            stderr: errorOutput
          });
        } else if (msg.type === 'error') {
          ws.close();
          reject(new Error(msg.error.message));
        }
      });

      ws.on('error', reject);
    });
  }
}
// ---- end of seed code ----

function main() {
  const cuid = process.argv[2];
  const command = process.argv[3];
  const executor = new ContainerExecutor(
    process.env.CM_URL,
    cuid,
    process.env.CM_USER,
    process.env.CM_PASS
  );
  // a broken server must fail the test, not hang it
  const timer = setTimeout(() => {
    console.log('RESULT ' + JSON.stringify({ ok: false, message: 'timeout: no exit frame within 20 s' }));
    process.exit(1);
  }, 20000);
  executor.execute(command)
    .then(result => {
      clearTimeout(timer);
      console.log('RESULT ' + JSON.stringify({ ok: true, result }));
      // the seed's ws.close() waits for the server's close frame; do not hang on it
      setTimeout(() => process.exit(), 10000).unref();
    })
    .catch(err => {
      clearTimeout(timer);
      console.log('RESULT ' + JSON.stringify({ ok: false, message: String(err && err.message || err) }));
      process.exitCode = 1;
      setTimeout(() => process.exit(), 10000).unref();
    });
}

main();
