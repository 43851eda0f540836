// A third-party client in the tests: MQTT.js submits N fogmesh tasks with one
// publish each and counts the replies per task id.
// usage: node mqttjs_submit.js URL PROTOCOL_VERSION ROOT COUNT
// prints {"answered": n, "replies": n, "ok": n, "errors": [...]} and exits 0
const mqtt = require("mqtt");
const [url, version, root, count] = process.argv.slice(2);
const n = Number(count);
const replyTo = `${root}/replies/mqttjs-${process.pid}`;
const replies = new Map();
let ok = 0;
const errors = [];
const client = mqtt.connect(url, { protocolVersion: Number(version), clean: true, reconnectPeriod: 0,
                                   connectTimeout: 10000 });
client.on("error", (e) => { errors.push(String(e)); finish(); });
client.on("message", (topic, payload) => {
  const reply = JSON.parse(payload.toString());
  replies.set(reply.id, (replies.get(reply.id) || 0) + 1);
  if (reply.status === "ok") ok += 1;
  if (replies.size === n) setTimeout(finish, 500);     // then count any second reply
});
client.on("connect", () => {
  client.subscribe(replyTo, { qos: 1 }, (err) => {
    if (err) { errors.push(String(err)); return finish(); }
    for (let i = 0; i < n; i++) {
      const task = { id: `mqttjs-${process.pid}-${i}`, kind: "sum", args: { values: [i, 1] }, reply_to: replyTo };
      client.publish(`${root}/tasks`, JSON.stringify(task), { qos: 1 });
    }
  });
});
const timer = setTimeout(finish, 20000);
let done = false;
function finish() {
  if (done) return;
  done = true;
  clearTimeout(timer);
  let total = 0;
  for (const c of replies.values()) total += c;
  console.log(JSON.stringify({ answered: replies.size, replies: total, ok, errors }));
  client.end(true, () => process.exit(0));
}
