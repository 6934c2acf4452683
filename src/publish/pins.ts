/**
 * The pin that keeps one disk (or kernel, initrd) of one version: `a.<id tail>.v<N>.<part>`. The
 * tail of the id (24 characters of base32 BLAKE3) keeps names within the store's 128 characters.
 */
export function pinName (id: string, version: number, part: string): string {
  return `a.${id.slice(-24)}.v${version}.${part}`
}
