// Seed 004 "List Containers with Pagination" (Node.js + axios), kept as written in the seed;
// only the usage lines at the end are replaced by a small driver for the integration tests:
//   node list_containers.js [status1,status2|-] [cursor]
// with CM_URL / CM_USER / CM_PASS in the environment.  Prints the seed's own log lines, then
// one line "RESULT <json>" with what listContainers returned.

// ---- seed code (unchanged) ----
// Node.js example with axios
const axios = require('axios');

async function listContainers(baseUrl, auth, status = null, cursor = null) {
  const params = {};
  if (status) params.status = status.join(',');
  if (cursor) params.cursor = cursor;

  const response = await axios.get(`${baseUrl}/containers`, {
    params,
    headers: {
      'Authorization': `Basic ${auth}`
    }
  });

  const data = response.data;
  console.log(`Found ${data.containers.length} containers`);

  // Handle pagination
  if (data.next_cursor) {
    console.log('More results available, cursor:', data.next_cursor);
    // Fetch next page
    await listContainers(baseUrl, auth, status, data.next_cursor);
  }

  return data.containers;
}
// ---- end of seed code ----

async function main() {
  const baseUrl = process.env.CM_URL;
  const auth = Buffer.from(`${process.env.CM_USER}:${process.env.CM_PASS}`).toString('base64');
  const statusArg = process.argv[2];
  const status = statusArg && statusArg !== '-' ? statusArg.split(',') : null;
  const cursor = process.argv[3] || null;
  try {
    const containers = await listContainers(baseUrl, auth, status, cursor);
    console.log('RESULT ' + JSON.stringify({ ok: true, containers }));
  } catch (err) {
    const r = err.response;
    console.log('RESULT ' + JSON.stringify({
      ok: false, message: err.message,
      status: r ? r.status : null, data: r ? r.data : null,
    }));
    process.exitCode = 1;
  }
}

main();
