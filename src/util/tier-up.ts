import { setFlagsFromString } from 'node:v8'

/** V8's interrupt budget (Node 20, V8 11.3: 66 KiB of bytecode executed) times this. */
const BUDGET_FACTOR = 4
const V8_DEFAULT_BUDGET = 66 * 1024

let done = false

/**
 * Makes V8 wait longer before it optimizes a function (TurboFan), in a process that runs a node.
 *
 * A daemon runs the whole libp2p stack (noise, yamux, identify, the DHT, gossipsub, streams) and ours:
 * V8 optimizes ~500 functions in a fresh daemon's first pull, and re-optimizes those whose first
 * code meets a new shape. On the fan-out bench's 17 fresh daemons (2 cores) the compiler threads
 * took ~30 % of all CPU samples (`perf`), all through the pull. With 4x the budget, only code that
 * stays hot is compiled, with more type feedback. `node bench/fanout.js --hosts 16 --skip-http --warm`,
 * alternating builds: fresh 1.75-1.96x -> 1.63-1.70x ideal, CPU 73-81 -> 68-69 s; warm daemons
 * unchanged (1.43-1.48x), and so is the two-host exchange. The cost is later optimization in fresh
 * processes that are busy from the start: `node bench/update.js --hosts 8` pins in 39.5-43.4 s
 * against 36.8-40.3 s at V8's budget (docs/benchmarks.md). A daemon that has run a while pays
 * neither.
 * A process started with its own --interrupt-budget is left alone.
 */
export function tuneTierUp (): void {
  if (done) return
  done = true
  if (process.execArgv.some(a => a.startsWith('--interrupt-budget'))) return
  setFlagsFromString(`--interrupt-budget=${V8_DEFAULT_BUDGET * BUDGET_FACTOR}`)
}
