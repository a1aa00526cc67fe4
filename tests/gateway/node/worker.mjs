// A worker written with iii's own Node SDK (npm iii-sdk 0.22.1, unmodified), for the
// gateway tests: the same functions as worker.py (see there), registered as
// $SDK_PREFIX::NAME ("node" unless set) with an HTTP trigger on /$SDK_PREFIX/hello.
// It connects to the gateway at $III_URL, prints READY and serves until killed.
// (It lives beside package.json, so its bare imports resolve through ./node_modules.)
import { registerWorker, TriggerAction } from 'iii-sdk'
import { Logger, currentTraceId } from '@iii-dev/helpers/observability'

const PREFIX = process.env.SDK_PREFIX || 'node'
const RUNTIME = 'node'
const headers = process.env.SDK_TOKEN ? { Authorization: `Bearer ${process.env.SDK_TOKEN}` } : undefined

const iii = registerWorker(process.env.III_URL, { invocationTimeoutMs: 15000, headers })
const attempts = new Map()
const fid = (name) => `${PREFIX}::${name}`
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const functions = {
  echo: async (data) => ({ payload: data, runtime: RUNTIME, pid: process.pid, trace_id: currentTraceId() }),

  fail: async (data) => {
    throw new Error(`sdk handler failed: ${data.why}`)
  },

  call: async (data) => {
    const request = { function_id: data.function_id, payload: data.payload ?? null }
    if (data.action === 'void') request.action = TriggerAction.Void()
    else if (data.action) request.action = TriggerAction.Enqueue({ queue: data.action })
    try {
      return { result: (await iii.trigger(request)) ?? null }
    } catch (err) {
      // InvocationError's message is "<code>: <message>"
      const prefix = `${err.code}: `
      const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message
      return { error: { code: err.code, message } }
    }
  },

  nested: async (data) => {
    const inner = await iii.trigger({ function_id: 'gw::call', payload: { function_id: fid('echo'), payload: data } })
    if (data.tag) new Logger().info(`${data.tag} after the nested call`)
    return { inner, trace_id: currentTraceId() }
  },

  flaky: async (data) => {
    const n = (attempts.get(data.id) ?? 0) + 1
    attempts.set(data.id, n)
    await iii.trigger({ function_id: 'gw::record', payload: { id: `${data.id}:attempt-${n}` } })
    if (n === 1) throw new Error(`attempt 1 of ${data.id} fails on purpose`)
    return { attempts: n }
  },

  slow: async (data) => {
    await iii.trigger({ function_id: 'gw::record', payload: { id: data.id } })
    await sleep(data.seconds * 1000)
    return { slept: data.seconds }
  },

  log: async (data) => {
    new Logger().info(`${data.tag} from the ${RUNTIME} SDK`, { tag: data.tag })
    return { trace_id: currentTraceId() }
  },

  hello: async (request) => ({
    status_code: 201,
    body: { hello: request.body?.name ?? null, runtime: RUNTIME, path: request.path ?? null },
    headers: { 'x-sdk': RUNTIME },
  }),
}

for (const [name, handler] of Object.entries(functions)) iii.registerFunction(fid(name), handler)
iii.registerTrigger({
  type: 'http',
  function_id: fid('hello'),
  config: { api_path: `/${PREFIX}/hello`, http_method: 'POST' },
})
console.log('READY')
