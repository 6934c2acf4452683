import { CollectiveError, ExitCode } from '../errors.js'

/** The VM spec asks for more memory than this host has. */
export class NotEnoughMemoryError extends CollectiveError {
  static readonly code = 'ERR_NOT_ENOUGH_MEMORY'
  override readonly name = 'NotEnoughMemoryError'
  constructor (message: string) { super(message, NotEnoughMemoryError.code, ExitCode.BadInput) }
}

/** A VM spec that cannot be run as given (bad size, bad forward, unknown accelerator). */
export class InvalidVmSpecError extends CollectiveError {
  static readonly code = 'ERR_INVALID_VM_SPEC'
  override readonly name = 'InvalidVmSpecError'
  constructor (message: string) { super(message, InvalidVmSpecError.code, ExitCode.Usage) }
}

export class VmNotFoundError extends CollectiveError {
  static readonly code = 'ERR_VM_NOT_FOUND'
  override readonly name = 'VmNotFoundError'
  constructor (name: string) { super(`no VM named "${name}" (see: collective-peer ps)`, VmNotFoundError.code, ExitCode.NotFound) }
}

export class VmRunningError extends CollectiveError {
  static readonly code = 'ERR_VM_RUNNING'
  override readonly name = 'VmRunningError'
  constructor (message: string) { super(message, VmRunningError.code, ExitCode.Busy) }
}

/** QEMU exited before the VM was up, or refused its arguments; the message has its first error line. */
export class QemuFailedError extends CollectiveError {
  static readonly code = 'ERR_QEMU_FAILED'
  override readonly name = 'QemuFailedError'
  constructor (message: string) { super(message, QemuFailedError.code, ExitCode.Failure) }
}

/** `--accel kvm` on a host where KVM does not work (missing, or the probe guest did not run). */
export class KvmUnavailableError extends CollectiveError {
  static readonly code = 'ERR_KVM_UNAVAILABLE'
  override readonly name = 'KvmUnavailableError'
  constructor (message: string) { super(message, KvmUnavailableError.code, ExitCode.Failure) }
}

/** The layer of a VM was made over another disk root than the one it is asked to run. */
export class LayerMismatchError extends CollectiveError {
  static readonly code = 'ERR_LAYER_MISMATCH'
  override readonly name = 'LayerMismatchError'
  constructor (message: string) { super(message, LayerMismatchError.code, ExitCode.Busy) }
}

/** A boot profile that does not decode (or breaks its limits). */
export class InvalidBootProfileError extends CollectiveError {
  static readonly code = 'ERR_INVALID_BOOT_PROFILE'
  override readonly name = 'InvalidBootProfileError'
  constructor (message: string) { super(message, InvalidBootProfileError.code, ExitCode.BadInput) }
}
