import type { PortForward, VmSpec } from '../interface.js'

/** Where each file of a VM is, for the command line. */
export interface QemuPaths {
  nbdSocket: string
  consoleLog: string
  consoleSocket: string
  qmpSocket: string
  /** The qcow2 layer of each disk. */
  layers: string[]
  kernel?: string
  initrd?: string
}

/** QEMU's option syntax: a comma inside a value is written twice. */
export function escapeOption (value: string): string {
  return value.replaceAll(',', ',,')
}

function hostfwd (f: PortForward): string {
  return `hostfwd=${f.protocol}:${f.hostAddress}:${f.hostPort}-:${f.guestPort}`
}

/**
 * The QEMU command line for a VM: virtio-blk disks, each a qcow2 layer whose backing is the disk's
 * NBD export (read-only), the serial console on a socket and logged to a file, QMP on a socket,
 * user-mode networking with port forwards, and either direct kernel boot or disk boot.
 *
 * Caching is QEMU's default (writeback, flushes honoured): a guest FLUSH reaches the layer file with
 * fdatasync before it is acknowledged. Never `cache=unsafe`, which drops flushes.
 */
export function qemuArgs (spec: VmSpec, accel: 'kvm' | 'tcg', paths: QemuPaths): string[] {
  const args = [
    '-name', `guest=${spec.name},debug-threads=on`,
    '-machine', `pc,accel=${accel}`,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', `${Math.ceil(spec.memory / (1024 * 1024))}M`,
    '-smp', String(spec.cpus),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-chardev', `socket,id=console,path=${escapeOption(paths.consoleSocket)},server=on,wait=off,logfile=${escapeOption(paths.consoleLog)},logappend=on`,
    '-serial', 'chardev:console',
    '-qmp', `unix:${escapeOption(paths.qmpSocket)},server=on,wait=off`
  ]
  spec.disks.forEach((disk, i) => {
    args.push('-blockdev', JSON.stringify({
      driver: 'nbd',
      'node-name': `base${i}`,
      server: { type: 'unix', path: paths.nbdSocket },
      export: disk.root,
      'read-only': true
    }))
    args.push('-blockdev', JSON.stringify({
      driver: 'file',
      'node-name': `layer${i}-file`,
      filename: paths.layers[i],
      cache: { direct: false, 'no-flush': false }
    }))
    args.push('-blockdev', JSON.stringify({
      driver: 'qcow2',
      'node-name': `disk${i}`,
      file: `layer${i}-file`,
      backing: `base${i}`,
      cache: { direct: false, 'no-flush': false }
    }))
    const boot = spec.kernel == null && i === 0 ? ',bootindex=1' : ''
    args.push('-device', `virtio-blk-pci,drive=disk${i},id=vd${i}${boot}`)
  })
  args.push('-netdev', ['user', 'id=net0', ...spec.forwards.map(hostfwd)].join(','))
  args.push('-device', 'virtio-net-pci,netdev=net0')
  if (paths.kernel != null) {
    args.push('-kernel', paths.kernel)
    if (paths.initrd != null) args.push('-initrd', paths.initrd)
    args.push('-append', spec.cmdline ?? 'console=ttyS0')
  }
  return args
}
