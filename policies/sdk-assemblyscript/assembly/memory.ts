// Moving values across the canonical ABI: lifting what the router wrote into
// this module's memory (allocated with `cabi_realloc`) into managed objects,
// and freeing the raw memory once copied.

/** Scratch space where the router writes results of imported calls (24 bytes, 8-aligned). */
export const IMPORT_AREA: usize = memory.data(24, 8);

/** A UTF-16 string of `units` code units at `ptr`; frees it. */
export function liftString(ptr: usize, units: usize): string {
  if (units == 0) return "";
  const value = String.UTF16.decodeUnsafe(ptr, units << 1);
  heap.free(ptr);
  return value;
}

/** `len` bytes at `ptr`; frees them. */
export function liftBytes(ptr: usize, len: usize): Uint8Array {
  const bytes = new Uint8Array(<i32>len);
  if (len != 0) {
    memory.copy(bytes.dataStart, ptr, len);
    heap.free(ptr);
  }
  return bytes;
}

/** A list of `len` u32 at `ptr`; frees it. */
export function liftU32s(ptr: usize, len: usize): u32[] {
  const values = new Array<u32>(<i32>len);
  if (len != 0) {
    memory.copy(values.dataStart, ptr, len << 2);
    heap.free(ptr);
  }
  return values;
}

/** A list of `len` u64 at `ptr`; frees it. */
export function liftU64s(ptr: usize, len: usize): u64[] {
  const values = new Array<u64>(<i32>len);
  if (len != 0) {
    memory.copy(values.dataStart, ptr, len << 3);
    heap.free(ptr);
  }
  return values;
}

/** A list of `len` option<u32> at `ptr` as numbers, -1 for none; frees it. */
export function liftOptionU32s(ptr: usize, len: usize): StaticArray<i64> {
  const values = new StaticArray<i64>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + (i << 3);
    values[<i32>i] = load<u8>(at) == 0 ? -1 : <i64>load<u32>(at, 4);
  }
  if (len != 0) heap.free(ptr);
  return values;
}

/** A list of `len` option<f32> at `ptr`, -1 for none; frees it. */
export function liftOptionF32s(ptr: usize, len: usize): StaticArray<f32> {
  const values = new StaticArray<f32>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + (i << 3);
    values[<i32>i] = load<u8>(at) == 0 ? -1 : load<f32>(at, 4);
  }
  if (len != 0) heap.free(ptr);
  return values;
}

/** A list of `len` option<string> at `ptr`, null for none; frees it and its strings. */
export function liftOptionStrings(ptr: usize, len: usize): Array<string | null> {
  const values = new Array<string | null>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + i * 12;
    values[<i32>i] = load<u8>(at) == 0 ? null : liftString(load<u32>(at, 4), load<u32>(at, 8));
  }
  if (len != 0) heap.free(ptr);
  return values;
}

/** A list of `len` bools at `ptr`; frees it. */
export function liftBools(ptr: usize, len: usize): StaticArray<bool> {
  const values = new StaticArray<bool>(<i32>len);
  for (let i: usize = 0; i < len; i++) values[<i32>i] = load<u8>(ptr + i) != 0;
  if (len != 0) heap.free(ptr);
  return values;
}

/** The string error of a result written at `at` (pointer at `at`, length after it). */
export function liftStringAt(at: usize): string {
  return liftString(load<u32>(at), load<u32>(at, 4));
}
