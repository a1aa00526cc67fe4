// iii's Node SDK (unmodified) using the custom trigger type "ticker", which another worker
// provides: node::ticked counts its fires in state (scope "ticks", key "node").
import { registerWorker } from 'iii-sdk'

const iii = registerWorker(process.env.III_URL, { workerName: 'node-ticks' })
iii.registerFunction('node::ticked', async () => {
  await iii.trigger({ function_id: 'state::update', payload: { scope: 'ticks', key: 'node',
    ops: [{ type: 'increment', path: 'n', by: 1 }] } })
  return null
})
iii.registerTrigger({ type: 'ticker', function_id: 'node::ticked', config: { name: 'node' } })
console.log('READY')
