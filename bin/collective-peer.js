#!/usr/bin/env node
// libp2p 3 needs Promise.withResolvers, which Node 20 lacks; load the polyfill before anything else.
import '../dist/util/polyfill.js'

const { main } = await import('../dist/cli/main.js')
process.exitCode = await main(process.argv.slice(2))
