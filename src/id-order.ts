/**
 * Sorted lists of many entries keyed by text (the tool catalog's blocks,
 * the store's route lists) compare a small number first: the text is then
 * read only when the numbers tie. At 10k agents the entries are cold in
 * memory, and each probe of a search read the entry and then its id's
 * text — two cache misses where one does.
 */

/**
 * A small integer in the order of the text's first four chars: a < b when
 * idOrder(a) < idOrder(b) (equal numbers say nothing). Each char is its
 * code up to 127; a char of 127 or more counts as 127 and ends the number
 * (the rest 0), so the order holds for any text, not only the base64url
 * of tool ids (for which it tells all but ~1 in 16 million pairs apart).
 */
export function idOrder(id: string): number {
  let n = 0;
  let i = 0;
  for (; i < 4 && i < id.length; i++) {
    const c = id.charCodeAt(i);
    n = n * 128 + (c < 127 ? c : 127);
    if (c >= 127) {
      i++;
      break;
    }
  }
  for (; i < 4; i++) n *= 128;
  return n;
}
