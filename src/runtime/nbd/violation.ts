/** The client broke the NBD protocol: the server closes the connection (it cannot resynchronise). */
export class ProtocolViolation extends Error {
  override readonly name = 'ProtocolViolation'
}
