/// Mountpoint paths as text: made absolute and normalised lexically — empty and `.` components
/// dropped, `..` taking away the component before it — without looking at the filesystem.
/// Resolving symbolic links here (as Foundation's `standardizingPath` does on Linux) would
/// quietly mount wherever a link points; the mount itself refuses links (`Mount.openMountpoint`).
public enum MountpointPath {
    /// `path` made absolute against `directory` (when relative) and lexically normalised.
    public static func normalized(_ path: String, relativeTo directory: String = "/") -> String {
        let full = path.hasPrefix("/") ? path : directory + "/" + path
        var parts: [Substring] = []
        for part in full.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}
