import Foundation
public import OCI

/// The image configuration of a converted image: the source's, with `rootfs.diff_ids` naming
/// the converted image's layers.
///
/// Runtimes check that a config lists one diff id per manifest layer (containerd 1.6 refuses a
/// pull with "mismatched image rootfs and manifest layers" otherwise) and derive each layer's
/// snapshot name (its chain id) from them. A Ferry layer is not a tar, so it has no uncompressed
/// digest of its own: its diff id is its layer digest, which makes the chain of a converted
/// image unique to its blobs and bootstrap. Everything else (environment, entrypoint, history,
/// platform) is kept as the source has it.
public enum FerryConfig {
    /// `source` with `rootfs` set to `{"type": "layers", "diff_ids": [digest of each layer]}`,
    /// encoded with sorted keys.
    public static func rewrite(_ source: [UInt8], layers: [Descriptor], what: String) throws -> [UInt8] {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(source))) as? [String: Any] else {
            throw OCIError.malformedJSON(what: what, reason: "not a JSON object")
        }
        object["rootfs"] = ["type": "layers", "diff_ids": layers.map(\.digest.description)]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return Array(data)
    }
}
