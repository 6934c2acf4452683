/**
 * Every error the core throws on purpose is a `CollectiveError`: it has a stable `code` (what scripts
 * and tests match on) and a `name` (the class). The CLI prints `error [CODE]: message` and exits with
 * `exitCode`.
 */
export class CollectiveError extends Error {
  /** A stable, documented code such as `ERR_NOT_FOUND`. */
  readonly code: string
  /** The process exit code the CLI uses for this error. */
  readonly exitCode: number

  constructor (message: string, code: string, exitCode: number = ExitCode.Failure, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.exitCode = exitCode
  }
}

/** Exit codes of the CLI; documented in README.md. */
export const ExitCode = {
  Ok: 0,
  Failure: 1,
  Usage: 2,
  NotFound: 3,
  Busy: 4,
  Corrupt: 5,
  NoSpace: 6,
  BadInput: 7
} as const

export class UsageError extends CollectiveError {
  static readonly code = 'ERR_USAGE'
  override readonly name = 'UsageError'
  constructor (message: string) { super(message, UsageError.code, ExitCode.Usage) }
}

export class NotFoundError extends CollectiveError {
  static readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'NotFoundError'
  constructor (message: string) { super(message, NotFoundError.code, ExitCode.NotFound) }
}

export class FileNotFoundError extends CollectiveError {
  static readonly code = 'ERR_FILE_NOT_FOUND'
  override readonly name = 'FileNotFoundError'
  constructor (message: string) { super(message, FileNotFoundError.code, ExitCode.NotFound) }
}

export class FileAccessError extends CollectiveError {
  static readonly code = 'ERR_FILE_ACCESS'
  override readonly name = 'FileAccessError'
  constructor (message: string, options?: ErrorOptions) { super(message, FileAccessError.code, ExitCode.BadInput, options) }
}

export class InvalidImageError extends CollectiveError {
  static readonly code = 'ERR_INVALID_IMAGE'
  override readonly name = 'InvalidImageError'
  constructor (message: string) { super(message, InvalidImageError.code, ExitCode.BadInput) }
}

export class UnsupportedFormatError extends CollectiveError {
  static readonly code = 'ERR_UNSUPPORTED_FORMAT'
  override readonly name = 'UnsupportedFormatError'
  constructor (message: string) { super(message, UnsupportedFormatError.code, ExitCode.BadInput) }
}

export class InvalidChunkSizeError extends CollectiveError {
  static readonly code = 'ERR_INVALID_CHUNK_SIZE'
  override readonly name = 'InvalidChunkSizeError'
  constructor (message: string) { super(message, InvalidChunkSizeError.code, ExitCode.Usage) }
}

export class InvalidCidError extends CollectiveError {
  static readonly code = 'ERR_INVALID_CID'
  override readonly name = 'InvalidCidError'
  constructor (message: string) { super(message, InvalidCidError.code, ExitCode.Usage) }
}

export class InvalidNodeError extends CollectiveError {
  static readonly code = 'ERR_INVALID_NODE'
  override readonly name = 'InvalidNodeError'
  constructor (message: string) { super(message, InvalidNodeError.code, ExitCode.Corrupt) }
}

export class BlockMissingError extends CollectiveError {
  static readonly code = 'ERR_BLOCK_MISSING'
  override readonly name = 'BlockMissingError'
  constructor (message: string) { super(message, BlockMissingError.code, ExitCode.NotFound) }
}

export class HashMismatchError extends CollectiveError {
  static readonly code = 'ERR_HASH_MISMATCH'
  override readonly name = 'HashMismatchError'
  constructor (message: string) { super(message, HashMismatchError.code, ExitCode.Corrupt) }
}

export class BlockTooLargeError extends CollectiveError {
  static readonly code = 'ERR_BLOCK_TOO_LARGE'
  override readonly name = 'BlockTooLargeError'
  constructor (message: string) { super(message, BlockTooLargeError.code, ExitCode.BadInput) }
}

export class StoreLockedError extends CollectiveError {
  static readonly code = 'ERR_STORE_LOCKED'
  override readonly name = 'StoreLockedError'
  constructor (message: string, options?: ErrorOptions) { super(message, StoreLockedError.code, ExitCode.Busy, options) }
}

export class StoreCorruptError extends CollectiveError {
  static readonly code = 'ERR_STORE_CORRUPT'
  override readonly name = 'StoreCorruptError'
  constructor (message: string) { super(message, StoreCorruptError.code, ExitCode.Corrupt) }
}

export class NoSpaceError extends CollectiveError {
  static readonly code = 'ERR_NO_SPACE'
  override readonly name = 'NoSpaceError'
  constructor (message: string, options?: ErrorOptions) { super(message, NoSpaceError.code, ExitCode.NoSpace, options) }
}

export class InvalidCarError extends CollectiveError {
  static readonly code = 'ERR_INVALID_CAR'
  override readonly name = 'InvalidCarError'
  constructor (message: string, options?: ErrorOptions) { super(message, InvalidCarError.code, ExitCode.BadInput, options) }
}

export class AbortError extends CollectiveError {
  static readonly code = 'ERR_ABORTED'
  override readonly name = 'AbortError'
  constructor (message = 'the operation was aborted') { super(message, AbortError.code, 130) }
}

/** Node's system errors (ENOENT, ENOSPC, ...) carry a string `code`. */
export function isSystemError (err: unknown, code?: string): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' &&
    (code == null || (err as NodeJS.ErrnoException).code === code)
}

/** Translates the system errors a user can cause (missing file, full disk) into typed errors. */
export function fromSystemError (err: unknown, what: string): unknown {
  if (!isSystemError(err)) return err
  switch (err.code) {
    case 'ENOENT': return new FileNotFoundError(`${what}: no such file or directory`)
    case 'EACCES':
    case 'EPERM': return new FileAccessError(`${what}: permission denied`, { cause: err })
    case 'EISDIR': return new FileAccessError(`${what}: is a directory`, { cause: err })
    case 'ENOSPC':
    case 'EDQUOT': return new NoSpaceError(`${what}: no space left on device`, { cause: err })
    default: return err
  }
}
