/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1), e.g.
/// `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"`.
struct AuthChallenge: Sendable, Hashable {
    /// Lower-cased scheme: "bearer" or "basic".
    var scheme: String
    /// Parameters with lower-cased names; quoted values are unquoted (commas inside quotes kept).
    var parameters: [String: String]

    /// Parses every challenge in a header value. Unknown syntax is skipped, never fatal.
    static func parse(_ header: String) -> [AuthChallenge] {
        var scanner = Scanner(Array(header.utf8))
        var challenges: [AuthChallenge] = []
        while true {
            scanner.skip { $0 == 0x20 || $0 == 0x09 || $0 == 0x2C }
            guard let scheme = scanner.token() else { break }
            var challenge = AuthChallenge(scheme: scheme.lowercased(), parameters: [:])
            // Parameters: name = value, separated by commas; a token not followed by '=' starts
            // the next challenge.
            while true {
                scanner.skip { $0 == 0x20 || $0 == 0x09 || $0 == 0x2C }
                let mark = scanner.position
                guard let name = scanner.token() else { break }
                scanner.skip { $0 == 0x20 || $0 == 0x09 }
                guard scanner.peek == 0x3D else { scanner.position = mark; break }  // '='
                scanner.position += 1
                // token68 padding such as "abc==" ends up as a parameter with an empty name; harmless.
                scanner.skip { $0 == 0x20 || $0 == 0x09 }
                let value = scanner.peek == 0x22 ? scanner.quoted() : (scanner.token() ?? "")
                challenge.parameters[name.lowercased()] = value
            }
            challenges.append(challenge)
        }
        return challenges
    }

    private struct Scanner {
        let bytes: [UInt8]
        var position = 0
        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skip(while predicate: (UInt8) -> Bool) {
            while let c = peek, predicate(c) { position += 1 }
        }

        /// An RFC 9110 token (tchar+), or nil when none starts here.
        mutating func token() -> String? {
            let start = position
            skip { c in
                (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c)
                    || Array("!#$%&'*+-.^_`|~/:".utf8).contains(c)
            }
            return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
        }

        /// A quoted-string starting at '"', with backslash escapes.
        mutating func quoted() -> String {
            position += 1
            var out: [UInt8] = []
            while let c = peek {
                position += 1
                if c == 0x22 { break }
                if c == 0x5C, let next = peek { out.append(next); position += 1; continue }
                out.append(c)
            }
            return String(decoding: out, as: UTF8.self)
        }
    }
}
