// t245_schema.js: the service describes itself (GET /, GET /schema[/{name}], GET /openapi.json),
// and the published JSON Schemas agree with the request validators: generated documents, valid
// and invalid, go to ajv and to the service (?dry_run=true); any disagreement fails.
// A dry run must change nothing: Docker's containers and volumes are counted around it.
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');
const req = createRequire(path.join(__dirname, '..', 'clients', 'package.json'));
const Ajv2020 = req('ajv/dist/2020').default;

const BASE = new URL(process.env.CM_URL || 'http://127.0.0.1:18080');
const AUTH = 'Basic ' + Buffer.from(`${process.env.CM_USER}:${process.env.CM_PASS}`).toString('base64');
const IMAGE = 'cm-test-busybox:latest';
const BIND_ROOT = process.env.CM_BIND_ROOT || '';
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

let n = 0, failed = 0;
function ok(cond, desc, diag) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${desc}`);
  if (!cond && diag !== undefined)
    for (const l of String(typeof diag === 'string' ? diag : JSON.stringify(diag, null, 1)).split('\n').slice(0, 30))
      console.log(`#   ${l}`);
  return cond;
}

function call(method, p, body, opts = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const headers = { Authorization: AUTH, ...(opts.headers || {}) };
    if (opts.noAuth) delete headers.Authorization;
    if (data) { headers['Content-Type'] = 'application/json'; headers['Content-Length'] = data.length; }
    const r = http.request({ host: BASE.hostname, port: BASE.port, path: p, method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json = null;
        try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    r.on('error', reject);
    if (data) r.write(data);
    r.end();
  });
}

function docker(p) {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: '/var/run/docker.sock', path: p }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString())));
    }).on('error', reject);
  });
}

// this stack's containers (their /app is bind-mounted from its data directory) and the
// engine's volume names (other stacks may share the engine)
async function dockerCounts() {
  const data = process.env.CM_DATA_DIR ? fs.realpathSync(process.env.CM_DATA_DIR) : '/nonexistent';
  const cs = (await docker('/containers/json?all=1')).filter((c) => (c.Mounts || []).some((m) => (m.Source || '').startsWith(data + '/')));
  const vs = await docker('/volumes');
  return { containers: cs.length, volumes: new Set((vs.Volumes || []).map((v) => v.Name)) };
}

// ---------------------------------------------------------------- generated documents
let seed = Number(process.env.CM_SCHEMA_SEED || 0x2545f491) >>> 0 || 1;
function rnd(k) { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed % k; }
function pick(a) { return a[rnd(a.length)]; }
const clone = (x) => JSON.parse(JSON.stringify(x));

const STRINGS = ['', 'a', 'A', 'ab', '-bad', '.v', 'v-1', 'UPPER/x', 'a b', 'my-image:latest', IMAGE, 'x'.repeat(255),
  'x'.repeat(256), '/data', '/data/', '/data//x', '/app', '/app/x', '/appdata', '//proc', '/procs', '/etc/x', '/data/../x',
  '/./x', '/x/.', '/x/..y', '/', '///', '/data,x', '/data:x', '/da\tta', '/da\x7fta', '/' + 'd'.repeat(254), '/' + 'd'.repeat(255),
  'web', 'team:blue', 'tag with space', '_x', 'x_', '9lives', 'CONTAINER_UID', 'TAGS', 'tcp', 'udp', 'TCP', '512m', '1g',
  '5m', '6m', '6291455', '6291456', '4096g', '4097g', '4t', '1.5g', '12kb', '12KB', 'k', '0', 'abc',
  '99999999999999999999999', 'io.container-manager.x', 'team/x.y', 'x'.repeat(129), 'x'.repeat(1025), 'sleep 1',
  'relative/path', '/nonexistent-bind-source', 'registry.example:5000/team/app', 'localhost/x', 'localhost:5000/a',
  'Host.Example/app', 'host:99999/a', 'host:65535/a', 'host:00080/a', 'h:/a', 'a..b', 'a___b', 'a__b', 'sha256', 'x/', '/x',
  'a:b', 'a.b/c_d', 'a_b.c/d', 'LocalHost/x', 'my-app', 'a-', 'v1.0', '.tag', 'latest', 'x'.repeat(128), 'y'.repeat(200)];
if (BIND_ROOT) STRINGS.push(BIND_ROOT, BIND_ROOT + '/', path.join(BIND_ROOT, 'missing'), BIND_ROOT + '/../');
const NUMBERS = [0, 1, -1, 0.005, 0.01, 0.5, 1.5, 2, 3, 7, 80, 1023, 1024, 8080, 65535, 65536, 6291455, 6291456,
  4398046511104, 4398046511105, 4194304, 4194305, 1e300, -0.5];
const OTHER = [null, true, false, [], {}, ['a'], { a: 'b' }, [1, 2], [{ container: 80 }]];
const KEYS = ['image', 'command', 'env', 'tags', 'resources', 'ports', 'volumes', 'name', 'labels', 'cpus', 'memory',
  'pids', 'host', 'container', 'protocol', 'source', 'target', 'read_only', 'privileged', 'Image', 'host_ip', 'extra',
  'FOO', 'BAR_1', '1BAD', 'bad-name', 'team', 'io.container-manager.x', 'CONTAINER_UID', 'driver', 'repository', 'tag',
  'comment', 'author'];

function randomValue() {
  const k = rnd(10);
  if (k < 5) return pick(STRINGS);
  if (k < 8) return pick(NUMBERS);
  return clone(pick(OTHER));
}

// every [container, key] location inside a document
function locations(doc) {
  const out = [];
  (function walk(v) {
    if (v && typeof v === 'object') {
      for (const k of Object.keys(v)) { out.push([v, Array.isArray(v) ? Number(k) : k]); walk(v[k]); }
    }
  })(doc);
  return out;
}

function containersOf(doc) {
  const out = [doc];
  (function walk(v) { if (v && typeof v === 'object') for (const k of Object.keys(v)) if (v[k] && typeof v[k] === 'object') { out.push(v[k]); walk(v[k]); } })(doc);
  return out;
}

function mutate(doc) {
  const m = rnd(6);
  const locs = locations(doc);
  if (m <= 2 && locs.length) {               // replace a value
    const [c, k] = pick(locs);
    c[k] = randomValue();
  } else if (m === 3 && locs.length) {        // delete a member
    const [c, k] = pick(locs);
    if (Array.isArray(c)) c.splice(k, 1); else delete c[k];
  } else if (m === 4) {                       // add a member or an item
    const c = pick(containersOf(doc));
    if (Array.isArray(c)) c.push(c.length && rnd(2) ? clone(c[rnd(c.length)]) : randomValue());
    else c[pick(KEYS)] = randomValue();
  } else if (locs.length) {                   // copy one member's value into another
    const [c1, k1] = pick(locs), [c2, k2] = pick(locs);
    c1[k1] = clone(c2[k2]);
  }
  return doc;
}

// Rules JSON Schema cannot state (each named in the schema's description): when ajv accepts
// but the service refuses, the refusal must be one of these, with this code.
function sizeBytes(s) {
  const m = /^([0-9]+)([kKmMgGtT]?)[bB]?$/.exec(s);
  if (!m) return null;
  const mult = { '': 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n }[m[2].toLowerCase()];
  return BigInt(m[1]) * mult;
}
function cleanTarget(t) { return '/' + t.split('/').filter((x) => x).join('/'); }
function knownGaps(doc) {
  const gaps = [];
  if (!doc || typeof doc !== 'object') return gaps;
  const mem = doc.resources && doc.resources.memory;
  if (typeof mem === 'string') {
    const b = sizeBytes(mem);
    if (b !== null && (b < 6n << 20n || b > 4096n << 30n)) gaps.push(['memory size out of range', ['INVALID_VALUE', 'INVALID_SIZE']]);
  }
  const ports = Array.isArray(doc.ports) ? doc.ports : [];
  const seen = new Set();
  for (const p of ports) {
    if (!p || typeof p !== 'object') continue;
    const proto = p.protocol || 'tcp';
    const kc = `c${p.container}/${proto}`, kh = `h${p.host}/${proto}`;
    if (seen.has(kc) || (p.host && seen.has(kh))) gaps.push(['duplicate port', ['DUPLICATE_PORT']]);
    seen.add(kc);
    if (p.host) seen.add(kh);
  }
  if (typeof doc.repository === 'string' && typeof (doc.tag === undefined ? 'latest' : doc.tag) === 'string' &&
      Buffer.byteLength(doc.repository) + 1 + Buffer.byteLength(doc.tag === undefined ? 'latest' : doc.tag) > 255)
    gaps.push(['repository:tag longer than 255 bytes', ['INVALID_IMAGE_REF']]);
  const vols = Array.isArray(doc.volumes) ? doc.volumes : [];
  const targets = new Set();
  for (const v of vols) {
    if (!v || typeof v !== 'object' || typeof v.target !== 'string') continue;
    const t = cleanTarget(v.target);
    if (targets.has(t)) gaps.push(['duplicate target', ['DUPLICATE_TARGET']]);
    targets.add(t);
    if (typeof v.source === 'string') {
      let real = null;
      try { real = fs.realpathSync(v.source); } catch (e) { /* missing */ }
      const root = BIND_ROOT ? fs.realpathSync(BIND_ROOT) : null;
      const isDirOrFile = real && (fs.statSync(real).isDirectory() || fs.statSync(real).isFile());
      if (!real || !root || !(real === root || real.startsWith(root + '/')) || !isDirOrFile)
        gaps.push(['bind source missing or outside ALLOWED_BIND_ROOTS', ['INVALID_VALUE', 'FORBIDDEN_OPTION']]);
    }
  }
  return gaps;
}

// ---------------------------------------------------------------- main
(async () => {
  const ajv = new Ajv2020({ strict: false, allErrors: true });

  // GET /: Herc's index
  const idx = await call('GET', '/');
  ok(idx.status === 200 && idx.json && typeof idx.json === 'object', 'GET / answers 200 with an object', idx.text);
  const entries = Object.entries(idx.json || {});
  // a route added without its line shows with its bare action name ("app.create"): refused here
  const undocumented = entries.filter(([k, v]) => !/^(GET|POST|PUT|PATCH|DELETE) \/\S*$/.test(k) || typeof v !== 'string' ||
    !/^[A-Z].* .*[.)]$/.test(v));
  ok(entries.length >= 40 && undocumented.length === 0,
    `GET / lists ${entries.length} endpoints as "METHOD /path": "one sentence"`, undocumented);
  for (const k of ['GET /', 'GET /schema', 'GET /schema/{name}', 'GET /openapi.json', 'POST /containers', 'PATCH /containers/{cuid}',
    'GET /ws/{cuid}', 'POST /start_container', 'GET /jobs/{id}', 'POST /images/build', 'DELETE /volumes/{name}'])
    ok(typeof (idx.json || {})[k] === 'string', `GET / lists ${k}`);
  ok(!Object.keys(idx.json || {}).some((k) => k.includes('_auth')), 'GET / does not list the internal /_auth');
  const noauth = await call('GET', '/', undefined, { noAuth: true });
  ok(noauth.status === 401 && noauth.json && noauth.json.code === 'AUTH_REQUIRED', 'GET / without credentials: 401', noauth.text);
  for (const p of ['/schema', '/openapi.json']) {
    const r = await call('GET', p, undefined, { noAuth: true });
    ok(r.status === 401, `${p} without credentials: 401`);
  }

  // GET /schema and /schema/{name}
  const names = ['container-create', 'container-patch', 'container-ports', 'container-commit', 'volume-create', 'objects'];
  const schemas = {};
  for (const name of names) {
    const r = await call('GET', `/schema/${name}`);
    ok(r.status === 200 && r.json && r.json.$id === `/schema/${name}` && r.headers['content-type'].startsWith('application/json'),
      `GET /schema/${name}: 200, its $id`, r.text.slice(0, 300));
    schemas[name] = r.json;
  }
  const def = await call('GET', '/schema');
  ok(def.status === 200 && JSON.stringify(def.json) === JSON.stringify(schemas['container-create']), 'GET /schema is the create-container schema');
  const cpus = schemas['container-create'].$defs.resources.properties.cpus.maximum;
  ok(typeof cpus === 'number' && cpus >= 1, `the cpus maximum is the host's CPUs (${cpus})`);
  const miss = await call('GET', '/schema/nope');
  ok(miss.status === 404 && miss.json && miss.json.code === 'SCHEMA_NOT_FOUND' && miss.json.details.field === 'name' &&
     miss.json.message.includes('container-create'), 'GET /schema/nope: 404 SCHEMA_NOT_FOUND naming the ones there are', miss.text);
  const validators = {};
  for (const name of names) {
    try {
      ajv.addSchema(schemas[name]);
      validators[name] = ajv.getSchema(`/schema/${name}`);
      ok(typeof validators[name] === 'function', `ajv (draft 2020-12) compiles ${name}`);
    } catch (e) {
      ok(false, `ajv compiles ${name}`, String(e));
    }
  }

  // GET /openapi.json
  const oa = await call('GET', '/openapi.json');
  const doc = oa.json || {};
  ok(oa.status === 200 && doc.openapi === '3.1.0' && doc.info && doc.paths && doc.components, 'GET /openapi.json: an OpenAPI 3.1 document', oa.text.slice(0, 300));
  try {
    const { Validator } = await import(req.resolve('@seriousme/openapi-schema-validator'));
    const res = await new Validator().validate(clone(doc));
    ok(res.valid === true, 'the document validates against the OpenAPI 3.1 specification\'s own schema', res.errors);
    const broken = clone(doc);
    delete broken.info;
    const res2 = await new Validator().validate(broken);
    ok(res2.valid === false, 'and the validator does refuse a document without info');
  } catch (e) {
    ok(false, 'the OpenAPI validator runs', String(e));
  }
  const missing = [];
  for (const k of Object.keys(idx.json || {})) {
    const [m, p] = k.split(' ');
    if (!doc.paths || !doc.paths[p] || !doc.paths[p][m.toLowerCase()]) missing.push(k);
  }
  ok(missing.length === 0, 'every endpoint of GET / is in the OpenAPI paths with its method', missing);
  const ops = [];
  for (const [p, item] of Object.entries(doc.paths || {})) for (const [m, op] of Object.entries(item)) ops.push([p, m, op]);
  ok(ops.length === entries.length, `the OpenAPI document has exactly the ${entries.length} operations of GET / (${ops.length})`);
  const badOps = ops.filter(([p, m, op]) => !op.responses || !op.responses['401'] || !op.responses['400'] || !op.summary ||
    !Object.keys(op.responses).some((s) => /^[12]/.test(s)) || !op.operationId).map(([p, m]) => `${m} ${p}`);
  ok(badOps.length === 0, 'every operation has a summary, an operationId, a success status, 400 and 401', badOps);
  const pathParams = ops.filter(([p, m, op]) => (p.match(/\{[a-z]+\}/g) || []).some((x) =>
    !(op.parameters || []).some((q) => q.in === 'path' && `{${q.name}}` === x && q.required))).map(([p, m]) => `${m} ${p}`);
  ok(pathParams.length === 0, 'every {param} of a path is declared as a required path parameter', pathParams);
  const changes = ops.filter(([p, m, op]) => m !== 'get' && !['/start_container', '/stop_container', '/unlock_container'].includes(p) &&
    !/(upload-zip|archive)$/.test(p));
  ok(changes.every(([p, m, op]) => op.responses['202'] && (op.parameters || []).some((q) => q.name === 'async')),
    'every change documents 202 and ?async', changes.filter(([p, m, op]) => !op.responses['202']).map(([p, m]) => `${m} ${p}`));
  // every $ref resolves inside the document
  const unresolved = [];
  (function walk(v) {
    if (v && typeof v === 'object') {
      if (typeof v.$ref === 'string') {
        let t = doc;
        for (const part of v.$ref.replace(/^#\//, '').split('/')) t = t && t[part.replace(/~1/g, '/').replace(/~0/g, '~')];
        if (!v.$ref.startsWith('#/') || t === undefined) unresolved.push(v.$ref);
      }
      for (const k of Object.keys(v)) walk(v[k]);
    }
  })(doc);
  ok(unresolved.length === 0, 'every $ref of the OpenAPI document resolves', [...new Set(unresolved)]);
  ok(doc.components && doc.components.responses && doc.components.responses.E404 &&
     doc.components.responses.E404.content['application/json'].schema.$ref === '#/components/schemas/error',
    'error responses carry the error schema');
  const oaAjv = new Ajv2020({ strict: false, allErrors: true });
  let compiled = 0;
  try {
    oaAjv.addSchema({ $id: 'openapi', components: doc.components });
    for (const name of Object.keys(doc.components.schemas)) {
      if (oaAjv.getSchema(`openapi#/components/schemas/${name}`)) compiled++;
    }
  } catch (e) { console.log(`# ${e}`); }
  ok(compiled === Object.keys((doc.components || {}).schemas || {}).length, `ajv compiles all ${compiled} component schemas of the OpenAPI document`);
  const oaCreate = oaAjv.getSchema('openapi#/components/schemas/container-create');
  const errSchema = oaAjv.getSchema('openapi#/components/schemas/error');

  // real answers against the published response schemas
  const before0 = await dockerCounts();
  const made = await call('POST', '/containers', { image: IMAGE, tags: ['schema-test'], ports: [{ container: 80 }] });
  const cont = oaAjv.getSchema('openapi#/components/schemas/container');
  ok(made.status === 201 && cont(made.json), 'a real create: 201, and the body validates against components.schemas.container', cont.errors || made.text);
  const cuid = made.json && made.json.cuid;
  const list = await call('GET', '/containers?tag=schema-test');
  ok(list.status === 200 && oaAjv.getSchema('openapi#/components/schemas/container_list')(list.json), 'GET /containers validates against container_list');
  const st = await call('GET', `/containers/${cuid}/status`);
  ok(st.status === 200 && oaAjv.getSchema('openapi#/components/schemas/status')(st.json), 'GET .../status validates against status');
  const jobs = await call('GET', '/jobs?limit=5');
  ok(jobs.status === 200 && oaAjv.getSchema('openapi#/components/schemas/job_list')(jobs.json), 'GET /jobs validates against job_list',
    oaAjv.getSchema('openapi#/components/schemas/job_list').errors);
  const vols = await call('GET', '/volumes');
  ok(vols.status === 200 && oaAjv.getSchema('openapi#/components/schemas/volume_list')(vols.json), 'GET /volumes validates against volume_list');
  const nf = await call('GET', '/containers/c00000000-0000-4000-8000-000000000000');
  ok(nf.status === 404 && errSchema(nf.json), 'a 404 body validates against the error schema');

  // ---------------------------------------------------------------- the agreement
  const bases = {
    'container-create': [
      { image: IMAGE },
      { image: IMAGE, command: 'sleep 3600', env: { A: '1', B_2: '' }, tags: ['web', 'team:blue'],
        resources: { cpus: 0.5, memory: '64m', pids: 100 }, ports: [{ host: 0, container: 80 }, { container: 53, protocol: 'udp' }],
        volumes: [{ name: 'schema-vol', target: '/data' }, { name: 'other.vol', target: '/cache', read_only: true }] },
      { image: 'registry.example:5000/team/app@sha256:' + '0'.repeat(64), command: ['sh', '-c', 'true'], env: null, tags: null,
        resources: { memory: 67108864, cpus: null, pids: null }, ports: [{ host: 18099, container: 8080, protocol: 'tcp' }],
        volumes: BIND_ROOT ? [{ source: BIND_ROOT, target: '/srv/shared' }] : [] },
    ],
    'container-patch': [
      {},
      { env: { A: 'x', GONE: null }, tags: ['t1'], resources: { pids: 50 } },
      { image: IMAGE, command: null, tags: null, volumes: [{ name: 'schema-vol', target: '/data' }], resources: null },
    ],
    'container-ports': [
      { ports: [] },
      { ports: [{ container: 80 }, { host: 18098, container: 81, protocol: 'udp' }] },
    ],
    'container-commit': [
      { repository: 'schema-test' },
      { repository: 'registry.example:5000/team/schema-test', tag: 'v1.0', comment: 'made by the schema test' },
      { repository: 'localhost/a__b/c.d-e', tag: '_x' },
    ],
    'volume-create': [
      { name: 'schema-vol' },
      { name: 'schema.vol-2', labels: { team: 'blue', 'a/b.c': '' } },
      { name: 'v1', labels: null },
    ],
  };
  const target = {
    'container-create': ['POST', '/containers?dry_run=true'],
    'container-patch': ['PATCH', `/containers/${cuid}?dry_run=true`],
    'container-ports': ['PATCH', `/containers/${cuid}/ports?dry_run=true`],
    'container-commit': ['POST', `/containers/${cuid}/commit?dry_run=true`],
    'volume-create': ['POST', '/volumes?dry_run=true'],
  };
  const before = await dockerCounts();
  const triedVolumes = new Set(['schema-vol', 'other.vol']);
  const PER = Number(process.env.CM_SCHEMA_DOCS || 400);
  for (const name of Object.keys(bases)) {
    const validate = validators[name];
    let agree = 0, accepted = 0, refused = 0, gapped = 0;
    const disagreements = [];
    const badErrors = [];
    const oaDisagree = [];
    for (let i = 0; i < PER; i++) {
      let d = clone(pick(bases[name]));
      if (i >= bases[name].length) {
        const times = 1 + rnd(3);
        for (let t = 0; t < times; t++) d = mutate(d);
        if (rnd(40) === 0) d = randomValue(); // now and then not an object at all
      }
      const schemaOk = validate(d);
      const schemaErrors = validate.errors;
      if (!!oaAjv.getSchema(`openapi#/components/schemas/${name}`)(d) !== schemaOk) oaDisagree.push(d);
      if (name === 'volume-create' && d && typeof d.name === 'string') triedVolumes.add(d.name);
      const [m, p] = target[name];
      const r = await call(m, p, d);
      const serviceOk = r.status === 200 && r.json && r.json.valid === true;
      if (!serviceOk && !(r.status === 400 && errSchema(r.json))) badErrors.push({ doc: d, status: r.status, body: r.text.slice(0, 200) });
      const gaps = schemaOk ? knownGaps(d) : [];
      if (schemaOk === serviceOk) {
        agree++;
        if (serviceOk) accepted++; else refused++;
      } else if (schemaOk && !serviceOk && gaps.length && gaps.some(([why, codes]) => codes.includes(r.json.code))) {
        gapped++;
      } else {
        disagreements.push({ doc: d, schema: schemaOk ? 'valid' : schemaErrors.slice(0, 2).map((e) => `${e.instancePath} ${e.message}`),
          service: `${r.status} ${r.json ? r.json.code + ' ' + (r.json.details || {}).field : r.text.slice(0, 80)}`, gaps: gaps.map((g) => g[0]) });
      }
    }
    ok(disagreements.length === 0, `${name}: ${PER} generated documents, ajv and the service agree on ${agree} ` +
      `(${accepted} valid, ${refused} invalid), ${gapped} refused for a rule the schema names but cannot state`, disagreements.slice(0, 5));
    ok(accepted >= PER / 20 && refused >= PER / 4, `${name}: the documents exercise both sides (${accepted} valid, ${refused} invalid)`);
    ok(badErrors.length === 0, `${name}: every refusal is 400 with the error schema`, badErrors.slice(0, 3));
    ok(oaDisagree.length === 0, `${name}: the OpenAPI document's copy of the schema judges the same`, oaDisagree.slice(0, 3));
  }
  const after = await dockerCounts();
  const newVolumes = [...after.volumes].filter((v) => !before.volumes.has(v) && triedVolumes.has(v));
  ok(after.containers === before.containers && newVolumes.length === 0,
    `dry runs changed nothing in Docker (this stack's containers ${before.containers} → ${after.containers}, ` +
    `volumes named in the documents made: ${newVolumes.length})`, newVolumes);
  const stillOne = await call('GET', '/containers?tag=schema-test');
  ok(stillOne.json && stillOne.json.containers.length === 1, 'dry runs added no container row');
  const vnames = ((await call('GET', '/volumes')).json.volumes || []).map((v) => v.name);
  ok(!vnames.includes('schema-vol') && !vnames.includes('schema.vol-2') && !vnames.includes('v1'), 'dry runs made no volume');

  // the dry-run switch itself
  const bad = await call('POST', '/containers?dry_run=maybe', { image: IMAGE });
  ok(bad.status === 400 && bad.json.code === 'INVALID_VALUE' && bad.json.details.field === 'dry_run', '?dry_run=maybe: 400 naming dry_run', bad.text);
  const dr = await call('POST', '/containers?dry_run=true', { image: IMAGE });
  ok(dr.status === 200 && dr.json.valid === true, 'a valid dry run answers 200 {"valid": true}');
  const drBad = await call('POST', '/containers?dry_run=1', { image: IMAGE, privileged: true });
  ok(drBad.status === 400 && drBad.json.code === 'FORBIDDEN_OPTION' && !oaCreate({ image: IMAGE, privileged: true }),
    'a forbidden option: refused by both');
  const drNf = await call('PATCH', '/containers/c00000000-0000-4000-8000-000000000000?dry_run=true', {});
  ok(drNf.status === 404, 'a dry-run PATCH of a missing container: 404');

  // clean up
  const del = await call('DELETE', `/containers/${cuid}`);
  ok(del.status === 204, 'the test container is deleted');
  const end = await dockerCounts();
  ok(end.containers === before0.containers, 'Docker holds as many containers as before the test');
  console.log(`1..${n}`);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.log(`not ok ${++n} - the test died: ${e.stack}`); console.log(`1..${n}`); process.exit(1); });
