internal import CFerry

/// SHA-256 through OpenSSL's EVP interface (which uses the CPU's SHA extensions when present).
///
/// The corresponding C functions are `EVP_DigestInit_ex`, `EVP_DigestUpdate` and
/// `EVP_DigestFinal_ex`. An instance is not thread-safe; `hash(_:)` is.
public final class SHA256 {
    /// Bytes in a SHA-256 digest.
    public static let digestSize = 32
    private let context: OpaquePointer

    /// Starts a new digest.
    public init() {
        // Safe because: EVP_MD_CTX_new returns nil only on allocation failure, which is fatal anyway.
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new: out of memory") }
        context = ctx
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Feeds bytes into the digest.
    public func update(_ bytes: [UInt8]) { update(bytes[...]) }

    /// Feeds a slice of a byte array into the digest without copying it.
    public func update(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { raw in
            // Safe because: raw is valid for raw.count bytes for the duration of the closure.
            _ = EVP_DigestUpdate(context, raw.baseAddress, raw.count)
        }
    }

    /// Feeds raw memory into the digest (for callers inside this module, e.g. a file mapping).
    func update(raw: UnsafeRawBufferPointer) {
        _ = EVP_DigestUpdate(context, raw.baseAddress, raw.count)
    }

    /// Returns the digest; the instance must not be used afterwards.
    public func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.digestSize)
        var length: UInt32 = 0
        out.withUnsafeMutableBufferPointer { dst in
            // Safe because: dst has exactly digestSize (32) bytes, the size SHA-256 writes.
            _ = EVP_DigestFinal_ex(context, dst.baseAddress, &length)
        }
        return out
    }

    /// One-shot digest of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] { hash(bytes[...]) }

    /// One-shot digest of a slice.
    public static func hash(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        bytes.withUnsafeBufferPointer { src in
            var out = [UInt8](repeating: 0, count: digestSize)
            out.withUnsafeMutableBufferPointer { dst in
                // Safe because: src is valid for src.count bytes; dst has the 32 bytes SHA256() writes.
                _ = CFerry.SHA256(src.baseAddress, src.count, dst.baseAddress)
            }
            return out
        }
    }
}

/// Lower-case hexadecimal text of bytes, as used in OCI digests ("sha256:<hex>").
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Parses lower- or upper-case hexadecimal text into bytes; nil when it is not hex of even length.
public func bytesFromHex(_ text: some StringProtocol) -> [UInt8]? {
    let chars = Array(text.utf8)
    guard chars.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out = [UInt8]()
    out.reserveCapacity(chars.count / 2)
    var i = 0
    while i < chars.count {
        guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}
