import Foundation

/// One filter of containerd's `List` (its `filters` package syntax): conditions joined by
/// commas, all of which must hold — `name==X`, `parent!=X`, `kind==committed`,
/// `labels."containerd.io/gc.root"`, `labels.key==value`, `name~=regexp`. A field alone asks
/// that it be present and not empty.
struct SnapshotFilter {
    enum Operator { case present, equal, notEqual, matches }
    struct Condition {
        var field: [String]
        var op: Operator
        var value: String
    }
    var conditions: [Condition]

    init(parsing text: String) throws {
        conditions = try Self.split(text).map(Self.condition)
    }

    func matches(_ record: SnapshotRecord) -> Bool {
        conditions.allSatisfy { condition in
            let actual = Self.value(of: condition.field, in: record)
            switch condition.op {
            case .present: return !(actual ?? "").isEmpty
            case .equal: return actual == condition.value
            case .notEqual: return actual != condition.value
            case .matches:
                guard let actual, let regex = try? NSRegularExpression(pattern: condition.value) else { return false }
                return regex.firstMatch(in: actual, range: NSRange(actual.startIndex..., in: actual)) != nil
            }
        }
    }

    static func value(of field: [String], in record: SnapshotRecord) -> String? {
        switch field.first {
        case "name": return record.key
        case "parent": return record.parent
        case "kind": return record.kind.description
        case "labels" where field.count == 2: return record.labels[field[1]]
        default: return nil
        }
    }

    /// Splits on commas outside quotes.
    static func split(_ text: String) throws -> [String] {
        var parts: [String] = [], current = "", quoted = false, escaped = false
        for c in text {
            if escaped { current.append(c); escaped = false; continue }
            if c == "\\" && quoted { current.append(c); escaped = true; continue }
            if c == "\"" { quoted.toggle() }
            if c == "," && !quoted { parts.append(current); current = ""; continue }
            current.append(c)
        }
        guard !quoted else { throw SnapshotError.invalidArgument("filter \(text): unterminated quote") }
        parts.append(current)
        return parts.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    static func condition(_ text: String) throws -> Condition {
        var fieldText = text, op = Operator.present, value = ""
        for (token, kind) in [("==", Operator.equal), ("!=", .notEqual), ("~=", .matches)] {
            if let range = text.range(of: token) {
                fieldText = String(text[..<range.lowerBound])
                value = unquote(String(text[range.upperBound...]).trimmingCharacters(in: .whitespaces))
                op = kind
                break
            }
        }
        var field: [String] = []
        var rest = Substring(fieldText.trimmingCharacters(in: .whitespaces))
        while !rest.isEmpty {
            if rest.first == "\"" {
                let body = rest.dropFirst()
                guard let end = body.firstIndex(of: "\"") else { throw SnapshotError.invalidArgument("filter \(text): unterminated quote") }
                field.append(String(body[..<end]))
                rest = body[body.index(after: end)...]
                if rest.first == "." { rest = rest.dropFirst() }
            } else if let dot = rest.firstIndex(of: "."), field.isEmpty {
                field.append(String(rest[..<dot]))
                rest = rest[rest.index(after: dot)...]
            } else {
                field.append(String(rest))
                rest = ""
            }
        }
        guard let first = field.first, ["name", "parent", "kind", "labels"].contains(first),
              first == "labels" ? field.count == 2 : field.count == 1 else {
            throw SnapshotError.invalidArgument("filter \(text): unknown field (name, parent, kind or labels.KEY)")
        }
        return Condition(field: field, op: op, value: value)
    }

    static func unquote(_ text: String) -> String {
        guard text.count >= 2, text.first == "\"", text.last == "\"" else { return text }
        return String(text.dropFirst().dropLast()).replacingOccurrences(of: "\\\"", with: "\"")
    }
}
