// A plain Aedes MQTT broker (npm `aedes`) on 127.0.0.1:PORT, for fogmesh's
// tests of brokers without shared subscriptions. Usage: node aedes_broker.js PORT
// Aedes keeps persistent sessions and their QoS 1 queues in memory (aedes-persistence).
const aedes = require('aedes')()
const server = require('net').createServer(aedes.handle)
const port = parseInt(process.argv[2], 10)
server.listen(port, '127.0.0.1', () => console.log(`aedes listening on ${port}`))
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => aedes.close(() => server.close(() => process.exit(0))))
}
