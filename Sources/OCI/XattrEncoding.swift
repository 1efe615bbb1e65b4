/// The encodings libarchive uses in `LIBARCHIVE.xattr.<name>=<value>` PAX records
/// (archive_write_set_format_pax.c): the name is URL-encoded ("%XX" for unsafe bytes), the
/// value is base64 with or without "=" padding.
enum XattrEncoding {
    /// Decodes "%XX" escapes; nil on a malformed escape.
    static func urlDecode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        var out = [UInt8]()
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == UInt8(ascii: "%") {
                guard text.endIndex - i >= 3, let hi = hexValue(text[i + 1]), let lo = hexValue(text[i + 2]) else { return nil }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }

    /// Decodes standard base64 (RFC 4648 §4); padding optional; nil on other characters.
    static func base64Decode(_ text: [UInt8]) -> [UInt8]? {
        var out = [UInt8]()
        var accumulator: UInt32 = 0
        var bits = 0
        for c in text {
            let v: UInt32
            switch c {
            case 0x41...0x5a: v = UInt32(c - 0x41)
            case 0x61...0x7a: v = UInt32(c - 0x61 + 26)
            case 0x30...0x39: v = UInt32(c - 0x30 + 52)
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            accumulator = accumulator << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        return out
    }
}
