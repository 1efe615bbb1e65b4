/// Everything that can be wrong with an OCI image or a reference to one.
///
/// Each case names the thing (layer digest, tar entry path, file) and the cause, so that the
/// message can be shown to a user as it is.
public enum OCIError: Error, Sendable, CustomStringConvertible {
    case malformedDigest(String)
    case malformedPlatform(String)
    case malformedReference(String, reason: String)
    case malformedJSON(what: String, reason: String)
    case unsupportedMediaType(what: String, mediaType: String)
    case digestMismatch(what: String, expected: Digest, actual: Digest)
    case sizeMismatch(what: String, expected: Int64, actual: Int64)
    case notFound(what: String)
    case noMatchingPlatform(requested: Platform, available: [Platform])
    /// A tar stream is malformed; `layer` names the layer, `entry` the entry (if known).
    case malformedTar(layer: String, entry: String?, reason: String)
    /// A tar entry's path escapes the root or is otherwise unsafe.
    case unsafePath(layer: String, entry: String, reason: String)
    /// A hard link names a target that does not exist (in this layer or the layers below).
    case danglingHardlink(layer: String, entry: String, target: String)
    /// Decompressing a layer failed (bad gzip/zstd data).
    case badCompression(layer: String, reason: String)
    case io(path: String, reason: String)
    /// A tar entry uses a feature Ferry does not implement (GNU sparse files, unknown types).
    case unsupportedTarEntry(layer: String, entry: String, reason: String)
    /// A hard link names a directory, which no file system allows.
    case hardlinkToDirectory(layer: String, entry: String, target: String)
    /// An entry's path goes through something that is not a directory (a file, a device, a
    /// symbolic link loop).
    case notADirectory(layer: String, entry: String, component: String)
    /// A manifest, config or JSON file is larger than Ferry accepts.
    case tooLarge(what: String, limit: Int64)
    /// A digest algorithm Ferry cannot verify (only sha256 is).
    case unsupportedDigest(what: String, digest: Digest)
    /// An image store (OCI layout, docker archive) has no image with this tag.
    case tagNotFound(tag: String, source: String, available: [String])
    /// An image store holds several images and none was chosen.
    case ambiguousImage(source: String, available: [String])
    /// An OCI layout or docker archive does not have the required shape.
    case malformedImageStore(source: String, reason: String)

    public var description: String {
        switch self {
        case let .malformedDigest(text): return "malformed digest \"\(text)\" (expected sha256:<64 hex digits>)"
        case let .malformedPlatform(text): return "malformed platform \"\(text)\" (expected os/arch[/variant], e.g. linux/amd64)"
        case let .malformedReference(text, reason): return "malformed image reference \"\(text)\": \(reason)"
        case let .malformedJSON(what, reason): return "\(what) is not valid JSON of the expected shape: \(reason)"
        case let .unsupportedMediaType(what, mediaType): return "\(what) has unsupported media type \"\(mediaType)\""
        case let .digestMismatch(what, expected, actual): return "\(what): digest mismatch: expected \(expected), got \(actual)"
        case let .sizeMismatch(what, expected, actual): return "\(what): size mismatch: expected \(expected) bytes, got \(actual)"
        case let .notFound(what): return "\(what) not found"
        case let .noMatchingPlatform(requested, available):
            return "no image for platform \(requested) in the index (available: \(available.map(\.description).joined(separator: ", ")))"
        case let .malformedTar(layer, entry, reason):
            return "layer \(layer): malformed tar\(entry.map { " at entry \"\($0)\"" } ?? ""): \(reason)"
        case let .unsafePath(layer, entry, reason): return "layer \(layer): unsafe path \"\(entry)\": \(reason)"
        case let .danglingHardlink(layer, entry, target):
            return "layer \(layer): hard link \"\(entry)\" points to \"\(target)\", which does not exist"
        case let .badCompression(layer, reason): return "layer \(layer): cannot decompress: \(reason)"
        case let .io(path, reason): return "\(path): \(reason)"
        case let .unsupportedTarEntry(layer, entry, reason): return "layer \(layer): entry \"\(entry)\" is not supported: \(reason)"
        case let .hardlinkToDirectory(layer, entry, target):
            return "layer \(layer): hard link \"\(entry)\" points to directory \"\(target)\" (hard links to directories are not allowed)"
        case let .notADirectory(layer, entry, component):
            return "layer \(layer): entry \"\(entry)\" lies below \"\(component)\", which is not a directory"
        case let .tooLarge(what, limit): return "\(what) is larger than the \(limit) bytes Ferry accepts"
        case let .unsupportedDigest(what, digest): return "\(what): cannot verify digest \(digest) (only sha256 is supported)"
        case let .tagNotFound(tag, source, available):
            return "\(source) has no image tagged \"\(tag)\" (available: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case let .ambiguousImage(source, available):
            return "\(source) holds several images; name one with a tag (available: \(available.isEmpty ? "untagged images only" : available.joined(separator: ", ")))"
        case let .malformedImageStore(source, reason): return "\(source): \(reason)"
        }
    }
}
