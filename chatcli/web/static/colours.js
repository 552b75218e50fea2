// Name colours: the same hash and palette as the terminal (chatcli/ui/render.py,
// docs/colours.md), so a person has one colour in `join`, `replay` and this page.

/** The palette's RGB values, in render.PALETTE_RGB's order. */
export const PALETTE = Object.freeze([
  "#0087ff", "#00af5f", "#00afaf", "#5f5fd7", "#875faf", "#af00d7",
  "#af5f00", "#af5faf", "#d75f00", "#d75f87", "#d78700", "#5faf5f",
]);

// what the server strips from text: C0, DEL, C1 and the bidi overrides and isolates
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/gu;

/** FNV-1a, 32 bits, over a byte array: tiny and the same in every language. */
export function fnv1a32(bytes) {
  let hash = 0x811c9dc5;
  for (const byte of bytes) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/**
 * What a colour is computed from: the name cleaned, NFKC-normalised and case-folded.
 *
 * Python's str.casefold() is full Unicode case folding; JavaScript has only
 * toLowerCase(). They differ for a handful of letters; the two a name can plausibly hold
 * are folded by hand here (ß and ẞ to "ss", final sigma to sigma). Still different:
 * Cherokee small letters (casefold maps them to capitals) and a few Greek letters with
 * iota subscript; names made of those may get another colour than in a terminal.
 */
export function colourKey(name) {
  return name
    .replace(CONTROLS, "")
    .normalize("NFKC")
    .toLowerCase()
    .replace(/ß/gu, "ss")
    .replace(/ς/gu, "σ");
}

/** Which palette entry a name gets: FNV-1a 32 of its key's UTF-8, modulo 12. */
export function colourIndex(name) {
  return fnv1a32(new TextEncoder().encode(colourKey(name))) % PALETTE.length;
}

/** The CSS colour of a name. */
export function colourFor(name) {
  return PALETTE[colourIndex(name)];
}
