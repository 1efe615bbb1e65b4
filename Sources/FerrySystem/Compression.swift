internal import CFerry

/// LZ4 block compression (the raw block format, no frame), as used for Ferry chunks.
///
/// The corresponding C functions are `LZ4_compress_default` and `LZ4_decompress_safe`.
public enum LZ4 {
    /// Compresses `input` into a new LZ4 block.
    public static func compress(_ input: ArraySlice<UInt8>) throws -> [UInt8] {
        guard input.count <= Int(LZ4_MAX_INPUT_SIZE) else { throw SystemError.lz4("compress (input too large)") }
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var written: Int32 = 0
        // Uninitialized: zeroing a compress bound's worth of pages per chunk showed in profiles.
        let out = [UInt8](unsafeUninitializedCapacity: max(bound, 1)) { dst, count in
            written = input.withUnsafeBytes { src in
                // Safe because: src holds input.count bytes and dst holds LZ4_compressBound bytes;
                // count is set to the bytes LZ4 wrote (0 on failure).
                LZ4_compress_default(src.baseAddress?.assumingMemoryBound(to: CChar.self),
                                     UnsafeMutableRawPointer(dst.baseAddress)?.assumingMemoryBound(to: CChar.self),
                                     Int32(src.count), Int32(bound))
            }
            count = Int(max(written, 0))
        }
        guard written > 0 || input.isEmpty else { throw SystemError.lz4("compress") }
        return out
    }

    /// Compresses `input` into a new LZ4 block.
    public static func compress(_ input: [UInt8]) throws -> [UInt8] { try compress(input[...]) }

    /// Decompresses an LZ4 block whose original size is known exactly.
    public static func decompress(_ input: ArraySlice<UInt8>, originalSize: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: originalSize)
        let written = input.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                // Safe because: LZ4_decompress_safe never reads past src.count nor writes past dst.count.
                LZ4_decompress_safe(src.baseAddress?.assumingMemoryBound(to: CChar.self),
                                    dst.baseAddress?.assumingMemoryBound(to: CChar.self),
                                    Int32(src.count), Int32(dst.count))
            }
        }
        guard written >= 0 else { throw SystemError.lz4("decompress") }
        guard Int(written) == originalSize else { throw SystemError.sizeMismatch(expected: originalSize, actual: Int(written)) }
        return out
    }

    /// Decompresses an LZ4 block whose original size is known exactly.
    public static func decompress(_ input: [UInt8], originalSize: Int) throws -> [UInt8] {
        try decompress(input[...], originalSize: originalSize)
    }
}

/// zstd one-shot compression of a chunk (a single zstd frame).
///
/// The corresponding C functions are `ZSTD_compress` and `ZSTD_decompress`.
public enum Zstd {
    /// The default level, the same as the `zstd` CLI's.
    public static let defaultLevel: Int32 = 3

    /// Compresses `input` into one zstd frame.
    public static func compress(_ input: ArraySlice<UInt8>, level: Int32 = defaultLevel) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var written = 0
        let out = [UInt8](unsafeUninitializedCapacity: max(bound, 1)) { dst, count in
            written = input.withUnsafeBytes { src in
                // Safe because: dst holds ZSTD_compressBound(src.count) bytes; count is set to
                // what zstd wrote (0 on error).
                ZSTD_compress(dst.baseAddress, bound, src.baseAddress, src.count, level)
            }
            count = ZSTD_isError(written) != 0 ? 0 : written
        }
        if ZSTD_isError(written) != 0 { throw SystemError.zstd("compress", message: errorName(written)) }
        return out
    }

    /// Compresses `input` into one zstd frame.
    public static func compress(_ input: [UInt8], level: Int32 = defaultLevel) throws -> [UInt8] {
        try compress(input[...], level: level)
    }

    /// Decompresses one zstd frame whose original size is known exactly.
    public static func decompress(_ input: ArraySlice<UInt8>, originalSize: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: originalSize)
        let written = input.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                // Safe because: ZSTD_decompress never writes past dst.count.
                ZSTD_decompress(dst.baseAddress, dst.count, src.baseAddress, src.count)
            }
        }
        if ZSTD_isError(written) != 0 { throw SystemError.zstd("decompress", message: errorName(written)) }
        guard written == originalSize else { throw SystemError.sizeMismatch(expected: originalSize, actual: written) }
        return out
    }

    /// Decompresses one zstd frame whose original size is known exactly.
    public static func decompress(_ input: [UInt8], originalSize: Int) throws -> [UInt8] {
        try decompress(input[...], originalSize: originalSize)
    }

    static func errorName(_ code: Int) -> String {
        guard let name = ZSTD_getErrorName(code) else { return "code \(code)" }
        return String(cString: name)
    }
}

/// A push-style streaming decompressor: feed compressed bytes, receive decompressed bytes.
///
/// Used for `tar+gzip` and `tar+zstd` layers, which can be larger than memory.
public protocol StreamDecompressor: AnyObject {
    /// Decompresses `input` and appends what it produced to `output`.
    func decompress(_ input: ArraySlice<UInt8>, into output: inout [UInt8]) throws
    /// Checks that the stream ended cleanly (no truncated frame or member).
    func finish() throws
}

/// Streaming gzip (RFC 1952) decompression through zlib, including multi-member files.
///
/// The corresponding C functions are `inflateInit2`, `inflate`, `inflateReset` and `inflateEnd`.
public final class GzipDecompressor: StreamDecompressor {
    private var stream = z_stream()
    private var ended = false
    private var sawData = false

    /// Prepares a decompressor that accepts gzip headers (window bits 15 + 16).
    public init() throws {
        let rc = cferry_inflate_init2(&stream, 15 + 16)
        guard rc == Z_OK else { throw SystemError.zlib("init", message: "code \(rc)") }
    }

    deinit { inflateEnd(&stream) }

    public func decompress(_ input: ArraySlice<UInt8>, into output: inout [UInt8]) throws {
        guard !input.isEmpty else { return }
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        try input.withUnsafeBytes { src in
            // Safe because: zlib reads at most avail_in bytes from next_in, which stays valid inside this closure.
            stream.next_in = UnsafeMutablePointer(mutating: src.baseAddress?.assumingMemoryBound(to: UInt8.self))
            stream.avail_in = UInt32(src.count)
            while stream.avail_in > 0 {
                if ended {
                    // Another gzip member follows (concatenated gzip is valid).
                    guard inflateReset(&stream) == Z_OK else { throw SystemError.zlib("reset", message: "inflateReset failed") }
                    ended = false
                }
                let produced: Int = try chunk.withUnsafeMutableBytes { dst in
                    stream.next_out = dst.baseAddress?.assumingMemoryBound(to: UInt8.self)
                    stream.avail_out = UInt32(dst.count)
                    let rc = inflate(&stream, Z_NO_FLUSH)
                    switch rc {
                    case Z_OK, Z_BUF_ERROR: break
                    case Z_STREAM_END: ended = true
                    default: throw SystemError.zlib("inflate", message: Self.message(stream, rc))
                    }
                    return dst.count - Int(stream.avail_out)
                }
                sawData = true
                output.append(contentsOf: chunk[0..<produced])
                if produced == 0 && !ended && stream.avail_in > 0 && stream.avail_out > 0 {
                    throw SystemError.zlib("inflate", message: "no progress")
                }
            }
            stream.next_in = nil
        }
    }

    public func finish() throws {
        guard sawData else { throw SystemError.zlib("inflate", message: "empty input") }
        guard ended else { throw SystemError.zlib("inflate", message: "unexpected end of data (truncated gzip stream)") }
    }

    private static func message(_ s: z_stream, _ rc: Int32) -> String {
        if let m = s.msg { return String(cString: m) }
        return "code \(rc)"
    }
}

/// Streaming zstd decompression (`ZSTD_decompressStream`), including multiple frames.
public final class ZstdDecompressor: StreamDecompressor {
    private let context: OpaquePointer
    private var lastHint = 1

    public init() throws {
        guard let ctx = ZSTD_createDStream() else { throw SystemError.zstd("init", message: "out of memory") }
        context = ctx
        ZSTD_initDStream(context)
    }

    deinit { ZSTD_freeDStream(context) }

    public func decompress(_ input: ArraySlice<UInt8>, into output: inout [UInt8]) throws {
        var chunk = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
        try input.withUnsafeBytes { src in
            var inBuf = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
            repeat {
                let produced: Int = try chunk.withUnsafeMutableBytes { dst in
                    var outBuf = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                    // Safe because: zstd reads within inBuf.size and writes within outBuf.size.
                    let rc = ZSTD_decompressStream(context, &outBuf, &inBuf)
                    if ZSTD_isError(rc) != 0 { throw SystemError.zstd("decompress", message: Zstd.errorName(rc)) }
                    lastHint = rc
                    return outBuf.pos
                }
                output.append(contentsOf: chunk[0..<produced])
                if produced < chunk.count && inBuf.pos == inBuf.size { break }
            } while true
        }
    }

    public func finish() throws {
        // A non-zero hint means zstd still expects bytes of the current frame.
        guard lastHint == 0 else { throw SystemError.zstd("decompress", message: "unexpected end of data (truncated zstd frame)") }
    }
}

/// Gzip compression, used by tests and tools that build ordinary `tar+gzip` layers.
public enum Gzip {
    /// Compresses `input` into one gzip member at `level` (1–9).
    public static func compress(_ input: [UInt8], level: Int32 = 6) throws -> [UInt8] {
        var stream = z_stream()
        guard cferry_deflate_init2(&stream, level, 15 + 16) == Z_OK else { throw SystemError.zlib("deflate init", message: "failed") }
        defer { deflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 64)
        let rc: Int32 = input.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                // Safe because: deflateBound bytes are enough for one Z_FINISH call.
                stream.next_in = UnsafeMutablePointer(mutating: src.baseAddress?.assumingMemoryBound(to: UInt8.self))
                stream.avail_in = UInt32(src.count)
                stream.next_out = dst.baseAddress?.assumingMemoryBound(to: UInt8.self)
                stream.avail_out = UInt32(dst.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard rc == Z_STREAM_END else { throw SystemError.zlib("deflate", message: "code \(rc)") }
        out.removeSubrange(Int(stream.total_out)...)
        return out
    }
}
