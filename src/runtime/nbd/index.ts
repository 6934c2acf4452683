export { NbdServer, MAX_REQUEST, MAX_INFLIGHT } from './server.js'
export { DagExport } from './dag-export.js'
export { FileExport } from './file-export.js'
export { transmissionFlags } from './negotiate.js'
