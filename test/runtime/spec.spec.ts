import { describe, it, expect } from 'vitest'
import { checkSpec, parseForward, parseMemory, qemuArgs, type VmSpec } from '../../src/runtime/index.js'

const MiB = 1024 * 1024
const spec: VmSpec = {
  name: 'web',
  disks: [{ root: 'bafyroot' }],
  memory: 512 * MiB,
  cpus: 2,
  kernel: 'bafykernel',
  cmdline: 'console=ttyS0',
  forwards: [parseForward('2222:22'), parseForward('udp:0.0.0.0:5353:53')],
  accel: 'auto'
}
const paths = { nbdSocket: '/d/nbd.sock', consoleLog: '/d/vms/web/console.log', consoleSocket: '/d/vms/web/console.sock', qmpSocket: '/d/vms/web/qmp.sock', layers: ['/d/vms/web/disk0.qcow2'], kernel: '/d/vms/web/boot/k' }

describe('VM specs and the QEMU command line', () => {
  it('parses memory sizes like QEMU and refuses what the host cannot give', () => {
    expect(parseMemory('512M')).toBe(512 * MiB)
    expect(parseMemory('2G')).toBe(2048 * MiB)
    expect(parseMemory('1024')).toBe(1024 * MiB)
    expect(parseMemory('1.5GiB')).toBe(1536 * MiB)
    expect(() => parseMemory('lots')).toThrow(/invalid memory/)
    expect(() => parseMemory('1M')).toThrow(/too small/)
    expect(() => checkSpec({ ...spec, memory: 64 * 1024 * MiB }, { memory: 8 * 1024 * MiB })).toThrow(/asks for 64G of memory; this host has 8G/)
  })

  it('parses port forwards', () => {
    expect(parseForward('8080:80')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 })
    expect(parseForward('udp:0.0.0.0:5353:53')).toEqual({ protocol: 'udp', hostAddress: '0.0.0.0', hostPort: 5353, guestPort: 53 })
    for (const bad of ['80', '0:80', '70000:22', 'a:b', 'sctp:1:2']) expect(() => parseForward(bad)).toThrow(/invalid port forward/)
    expect(() => checkSpec({ ...spec, forwards: [parseForward('1:2'), parseForward('1:3')] })).toThrow(/forwarded twice/)
  })

  it('builds a QEMU command line: NBD backing read-only, qcow2 layer with flushes honoured, never cache=unsafe', () => {
    const args = qemuArgs(spec, 'tcg', paths)
    const line = args.join(' ')
    expect(line).not.toMatch(/unsafe/)
    expect(args).toContain('pc,accel=tcg')
    expect(args).not.toContain('-cpu')
    const blockdevs = args.flatMap((a, i) => a === '-blockdev' ? [JSON.parse(args[i + 1]!)] : [])
    expect(blockdevs).toEqual([
      { driver: 'nbd', 'node-name': 'base0', server: { type: 'unix', path: '/d/nbd.sock' }, export: 'bafyroot', 'read-only': true },
      { driver: 'file', 'node-name': 'layer0-file', filename: '/d/vms/web/disk0.qcow2', cache: { direct: false, 'no-flush': false } },
      { driver: 'qcow2', 'node-name': 'disk0', file: 'layer0-file', backing: 'base0', cache: { direct: false, 'no-flush': false } }
    ])
    expect(args).toContain('virtio-blk-pci,drive=disk0,id=vd0')
    expect(args).toContain('user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53')
    expect(line).toContain('-m 512M -smp 2')
    expect(line).toContain('-kernel /d/vms/web/boot/k -append console=ttyS0')
    expect(qemuArgs(spec, 'kvm', paths)).toEqual(expect.arrayContaining(['-cpu', 'host', 'pc,accel=kvm']))
    // Disk boot: the first disk is the boot device.
    expect(qemuArgs({ ...spec, kernel: undefined }, 'tcg', { ...paths, kernel: undefined })).toContain('virtio-blk-pci,drive=disk0,id=vd0,bootindex=1')
  })

  it('escapes commas in paths', () => {
    const args = qemuArgs(spec, 'tcg', { ...paths, consoleLog: '/a,b/console.log' })
    expect(args.find(a => a.startsWith('socket,id=console'))).toContain('logfile=/a,,b/console.log')
  })
})
