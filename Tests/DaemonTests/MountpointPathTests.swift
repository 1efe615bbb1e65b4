import Testing
@testable import Daemon

/// Mountpoints are normalised as text only: `..` and `.` are resolved lexically and nothing on
/// disk is consulted (Foundation's `standardizingPath` resolved symbolic links, so ferryd mounted
/// wherever a link pointed).
@Suite struct MountpointPathTests {
    @Test(arguments: [
        ("/a/b/../c/./d/", "/", "/a/c/d"),
        ("mnt", "/work/x", "/work/x/mnt"),
        ("../m", "/work/x", "/work/m"),
        ("/../..", "/", "/"),
        ("//a//b", "/", "/a/b"),
        ("/a/b&c=d e", "/", "/a/b&c=d e"),
    ])
    func normalisesLexically(path: String, directory: String, expected: String) {
        #expect(MountpointPath.normalized(path, relativeTo: directory) == expected)
    }

    @Test func doesNotResolveSymbolicLinks() {
        // /proc/self is a symbolic link; the text stays as given.
        #expect(MountpointPath.normalized("/proc/self/root") == "/proc/self/root")
    }
}
