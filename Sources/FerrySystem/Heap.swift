internal import CFerry

/// The C allocator's memory management.
public enum Heap {
    /// Gives memory that has been freed back to the kernel (glibc's `malloc_trim(0)`).
    ///
    /// glibc keeps freed memory for reuse; a program that moves from one phase to another whose
    /// allocations have other sizes (streaming megabyte buffers, then many small metadata records)
    /// would otherwise carry the first phase's freed pages in its resident set through the second.
    public static func returnFreedMemory() {
        _ = malloc_trim(0)
    }
}
