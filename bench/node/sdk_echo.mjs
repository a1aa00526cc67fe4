// The Node SDK worker of bench/bench_gateway.py: iii's own `iii-sdk` (0.22.1, pinned in
// this directory's package.json / package-lock.json) serving `bench::echo` (returns its
// payload) through `iii-broker gateway`.
//
//     (cd bench/node && npm ci) && III_URL=ws://127.0.0.1:49134 node bench/node/sdk_echo.mjs
//
// Exactly what a user would write: registerWorker with default options (OTel on unless
// OTEL_ENABLED=false is in the environment). Runs until SIGTERM or until its parent (the
// bench) is gone.
import { registerWorker } from 'iii-sdk'

const iii = registerWorker(process.env.III_URL ?? 'ws://127.0.0.1:49134', {
  workerName: process.env.BENCH_WORKER_NAME ?? 'bench-sdk-node',
})
iii.registerFunction('bench::echo', async (data) => data, { description: 'Returns its payload' })

const parent = process.ppid
let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  try {
    await iii.shutdown()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
setInterval(() => { if (process.ppid !== parent) stop() }, 1000)
