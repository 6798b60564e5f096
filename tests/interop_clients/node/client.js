// Node's xmlrpc package (npm xmlrpc, pinned in package-lock.json): reads <nil/> as null.
// Prints one line per step: "<step> <value>", strings as hex of their UTF-8 bytes.
// usage: node client.js URL PASS RUNNING DIGIT_USER DIGIT_PASS NEW_USER
'use strict';
const xmlrpc = require('xmlrpc');

const [url, pass, running, digitUser, digitPass, newUser] = process.argv.slice(2);
const client = xmlrpc.createClient(url);
const auth = { username: 'admin', password: pass };
const hex = (s) => Buffer.from(s, 'utf8').toString('hex');

function call(method, ...params) {
  return new Promise((resolve, reject) => {
    client.methodCall(method, params, (error, value) => (error ? reject(error) : resolve(value)));
  });
}

(async () => {
  console.log('login', JSON.stringify(await call('vcd.login', auth, {})));
  console.log('status', hex(Object.keys(await call('vcd.status', auth, {})).sort().join(',')));
  console.log('list', hex((await call('vxdb.list', auth, { username: '' })).join(',')));
  console.log('void', JSON.stringify(await call('vcd.user.set', auth,
    { username: newUser, password: 'secret123' })));
  try {
    await call('vxdb.xid.get', auth, { name: 'nosuchvserver' });
    throw new Error('no fault');
  } catch (e) {
    if (e.faultCode === undefined) throw e;
    console.log('fault', e.faultCode, hex(e.faultString));
  }
  console.log('exec', hex(await call('vx.exec', auth,
    { name: running, command: "printf 'a\\033[1mb\\r\\nc'" })));
  const raw = await call('vx.exec', auth,
    { name: running, encoding: 'base64', command: "printf 'a\\033\\r\\n\\377'" });
  console.log('exec_raw', Buffer.from(raw).toString('hex'));
  console.log('digits', JSON.stringify(await call('vcd.login',
    { username: digitUser, password: digitPass }, {})));
  console.log('xid', JSON.stringify(await call('vxdb.xid.get', auth, { name: 123 })));
})().catch((e) => { console.error(e); process.exit(1); });
