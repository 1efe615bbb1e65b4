import Testing
@testable import OCI

/// Small constructors for layer entries.
enum E {
    static func f(_ path: String, _ content: String = "", mode: UInt32 = 0o644) -> (TarEntry, String?) {
        (TarEntry(kind: .regular, path: components(path), mode: mode, size: Int64(content.utf8.count)), content)
    }
    static func d(_ path: String, mode: UInt32 = 0o755, uid: UInt32 = 0) -> (TarEntry, String?) {
        (TarEntry(kind: .directory, path: components(path), mode: mode, uid: uid), nil)
    }
    static func l(_ path: String, _ target: String) -> (TarEntry, String?) {
        (TarEntry(kind: .symlink, path: components(path), symlinkTarget: Array(target.utf8), mode: 0o777), nil)
    }
    static func h(_ path: String, _ target: String) -> (TarEntry, String?) {
        (TarEntry(kind: .hardlink, path: components(path), hardlinkTarget: components(target)), nil)
    }
    static func wh(_ path: String) -> (TarEntry, String?) {
        var parts = components(path)
        parts[parts.count - 1] = Array(".wh.".utf8) + parts[parts.count - 1]
        return (TarEntry(kind: .regular, path: parts), nil)
    }
    static func opq(_ dir: String) -> (TarEntry, String?) {
        (TarEntry(kind: .regular, path: components(dir) + [Array(".wh..wh..opq".utf8)]), nil)
    }
}

/// A tree rendered one line per entry: "dir/", "file=content", "link->target", "dev c1:3".
func render(_ tree: MergedTree<String>) -> [String] {
    var lines: [String] = []
    tree.walk { path, index in
        guard !path.isEmpty else { return true }
        let name = TarPath.display(path)
        switch tree.nodes[index].content {
        case .directory: lines.append(name + "/")
        case let .regular(_, payload): lines.append("\(name)=\(payload ?? "")")
        case let .symlink(target): lines.append("\(name)->\(String(decoding: target, as: UTF8.self))")
        case let .characterDevice(major, minor): lines.append("\(name) c\(major):\(minor)")
        case let .blockDevice(major, minor): lines.append("\(name) b\(major):\(minor)")
        case .fifo: lines.append("\(name) p")
        }
        return true
    }
    return lines
}

func merge(_ layers: [[(TarEntry, String?)]]) throws -> MergedTree<String> {
    var tree = MergedTree<String>()
    for (i, layer) in layers.enumerated() {
        tree.beginLayer(name: "layer\(i)")
        for (entry, payload) in layer { try tree.apply(entry, payload: payload) }
        tree.endLayer()
    }
    return tree
}

@Suite struct MergedTreeTests {
    struct Scenario: CustomTestStringConvertible, Sendable {
        var name: String
        var layers: [[(TarEntry, String?)]]
        var expected: [String]
        var testDescription: String { name }
    }

    static let scenarios: [Scenario] = [
        Scenario(name: "whiteout removes a lower file",
                 layers: [[E.f("a/x", "1"), E.f("a/y", "2")], [E.wh("a/x")]], expected: ["a/", "a/y=2"]),
        Scenario(name: "whiteout removes a lower directory and its subtree",
                 layers: [[E.d("a"), E.f("a/b/c", "1"), E.f("k", "k")], [E.wh("a")]], expected: ["k=k"]),
        Scenario(name: "opaque marker before this layer's entries",
                 layers: [[E.f("d/old", "o"), E.f("d/sub/x", "x")], [E.opq("d"), E.f("d/new", "n")]], expected: ["d/", "d/new=n"]),
        Scenario(name: "opaque marker after this layer's entries",
                 layers: [[E.f("d/old", "o"), E.f("d/sub/x", "x")], [E.f("d/new", "n"), E.f("d/sub/y", "y"), E.opq("d")]],
                 expected: ["d/", "d/new=n", "d/sub/", "d/sub/y=y"]),
        Scenario(name: "opaque directory only hides lower layers, later layers add again",
                 layers: [[E.f("d/a", "a")], [E.opq("d")], [E.f("d/b", "b")]], expected: ["d/", "d/b=b"]),
        Scenario(name: "whiteout does not remove an entry of its own layer",
                 layers: [[E.f("a", "old")], [E.f("a", "new"), E.wh("a")]], expected: ["a=new"]),
        Scenario(name: "whiteout then re-create in the same layer",
                 layers: [[E.f("a/x", "old")], [E.wh("a"), E.f("a/y", "new")]], expected: ["a/", "a/y=new"]),
        Scenario(name: "whiteout of a lower directory keeps what this layer put inside",
                 layers: [[E.f("a/old", "o")], [E.f("a/new", "n"), E.wh("a")]], expected: ["a/", "a/new=n"]),
        Scenario(name: "file replaces a directory and its subtree",
                 layers: [[E.f("a/b/c", "1")], [E.f("a", "file")]], expected: ["a=file"]),
        Scenario(name: "directory replaces a file",
                 layers: [[E.f("a", "file")], [E.d("a"), E.f("a/b", "1")]], expected: ["a/", "a/b=1"]),
        Scenario(name: "later entry of the same path wins",
                 layers: [[E.f("a", "1"), E.l("a", "t")], [E.f("b", "2")], [E.l("b", "x")]], expected: ["a->t", "b->x"]),
        Scenario(name: "whiteouts of missing paths remove nothing; missing parents are made, as containerd does",
                 layers: [[E.f("k", "k")], [E.wh("nothing"), E.wh("q/zz"), E.opq("r")]], expected: ["k=k", "q/", "r/"]),
        Scenario(name: "whiteouts below a file this layer wrote over a lower directory hide nothing (umoci repack)",
                 layers: [[E.f("deep/d00/x", "1"), E.f("deep/f", "2")], [E.f("deep", "file"), E.wh("deep/d00"), E.wh("deep/f")]],
                 expected: ["deep=file"]),
        Scenario(name: "whiteouts and opaque markers below a lower file hide nothing",
                 layers: [[E.f("a", "1"), E.l("s", "a")], [E.wh("a/x"), E.opq("a"), E.wh("s/y"), E.wh("a/b/c")]],
                 expected: ["a=1", "s->a"]),
        Scenario(name: "whiteouts below a symlink this layer made of a lower directory hide nothing there",
                 layers: [[E.f("d/x", "1"), E.f("t/x", "2")], [E.l("d", "t"), E.wh("d/x")]],
                 expected: ["d->t", "t/"]),
        Scenario(name: "reserved .wh..wh. names are not files and not whiteouts",
                 layers: [[E.f("a", "1")], [E.f(".wh..wh.plnk", "x")]], expected: ["a=1"]),
        Scenario(name: "entries below a symlinked directory land in its target",
                 layers: [[E.d("real"), E.l("link", "real"), E.l("abs", "/real/sub")], [E.f("link/x", "x"), E.f("abs/y", "y")]],
                 expected: ["abs->/real/sub", "link->real", "real/", "real/sub/", "real/sub/y=y", "real/x=x"]),
        Scenario(name: "devices and fifos",
                 layers: [[(TarEntry(kind: .characterDevice, path: components("dev/null"), deviceMajor: 1, deviceMinor: 3), nil),
                           (TarEntry(kind: .blockDevice, path: components("dev/sda"), deviceMajor: 8, deviceMinor: 0), nil),
                           (TarEntry(kind: .fifo, path: components("p")), nil)]],
                 expected: ["dev/", "dev/null c1:3", "dev/sda b8:0", "p p"]),
    ]

    @Test(arguments: scenarios)
    func mergesLayers(_ scenario: Scenario) throws {
        #expect(render(try merge(scenario.layers)) == scenario.expected)
    }

    @Test func hardLinksShareNodesWithinAndAcrossLayers() throws {
        let tree = try merge([[E.f("a", "1"), E.h("b", "a")], [E.h("c", "b"), E.f("a", "2")]])
        #expect(render(tree) == ["a=2", "b=1", "c=1"])
        // b and c name the original node; the replaced a is a new node.
        let b = tree.lookup(components("b"))
        #expect(b != nil && b == tree.lookup(components("c")) && b != tree.lookup(components("a")))
        let counts = tree.linkCounts()
        #expect(b.map { counts[$0] } == 2)
        #expect(counts[MergedTree<String>.root] == 2)
    }

    @Test func hardLinkToAWhitedOutFileIsDangling() {
        expectOCIError("dangling", { _ = try merge([[E.f("a", "1")], [E.wh("a"), E.h("b", "a")]]) }) {
            if case let .danglingHardlink(layer, entry, target) = $0 { return layer == "layer1" && entry == "b" && target == "a" }
            return false
        }
        expectOCIError("missing", { _ = try merge([[E.h("x/b", "nope/a")]]) }) {
            if case let .danglingHardlink(_, entry, target) = $0 { return entry == "x/b" && target == "nope/a" }
            return false
        }
    }

    @Test func hardLinkToADirectoryIsAnError() {
        expectOCIError("dir", { _ = try merge([[E.d("d"), E.h("l", "d")]]) }) {
            if case let .hardlinkToDirectory(layer, entry, target) = $0 { return layer == "layer0" && entry == "l" && target == "d" }
            return false
        }
    }

    @Test func entryBelowAFileIsAnError() {
        expectOCIError("below file", { _ = try merge([[E.f("a", "1"), E.f("a/b", "2")]]) }) {
            if case let .notADirectory(_, entry, component) = $0 { return entry == "a/b" && component == "a" }
            return false
        }
        expectOCIError("symlink loop", { _ = try merge([[E.l("a", "b"), E.l("b", "a"), E.f("a/x", "2")]]) }) {
            if case .notADirectory = $0 { return true }
            return false
        }
    }

    @Test func metadataOfDirectoriesExplicitAndImplicit() throws {
        let root = TarEntry(kind: .directory, path: [], mode: 0o700, uid: 5, mtimeSeconds: 9)
        let tree = try merge([[E.d("a", mode: 0o700, uid: 7), E.f("a/b", "1"), E.f("x/y/z", "z"), (root, nil)],
                              [E.d("a", mode: 0o750, uid: 8)]])
        #expect(render(tree) == ["a/", "a/b=1", "x/", "x/y/", "x/y/z=z"])
        let a = try #require(tree.lookup(components("a")))
        #expect(tree.nodes[a].mode == 0o750 && tree.nodes[a].uid == 8)
        let x = try #require(tree.lookup(components("x")))
        #expect(tree.nodes[x].mode == 0o755 && tree.nodes[x].uid == 0 && tree.nodes[x].mtimeSeconds == 0)
        // containerd ignores the root entry ("./"); so does Ferry (umoci applies it).
        #expect(tree.nodes[0].mode == 0o755 && tree.nodes[0].uid == 0 && tree.nodes[0].mtimeSeconds == 0)
    }

    /// What containerd's applier does and umoci does not (Kernel-Notes/layers.md).
    @Test func xattrsAndTimesAreWhatContainerdApplies() throws {
        let xattrs = [ExtendedAttribute("trusted.overlay.opaque", Array("y".utf8)), ExtendedAttribute("user.k", [1]),
                      ExtendedAttribute("security.capability", [2])]
        let old = TarEntry(kind: .regular, path: components("old"), mode: 0o644, mtimeSeconds: -86_400, mtimeNanoseconds: 5, xattrs: xattrs)
        let late = TarEntry(kind: .regular, path: components("late"), mtimeSeconds: Int64.max / 1_000_000_000,
                            mtimeNanoseconds: 854_775_808)
        let last = TarEntry(kind: .regular, path: components("last"), mtimeSeconds: Int64.max / 1_000_000_000,
                            mtimeNanoseconds: 854_775_807)
        let link = TarEntry(kind: .symlink, path: components("s"), symlinkTarget: Array("old".utf8), mode: 0o777, xattrs: xattrs)
        let tree = try merge([[(old, "o"), (late, "l"), (last, "z"), (link, nil)]])
        let node = { (path: String) in tree.nodes[tree.lookup(components(path))!] }
        // trusted.* never; user.* on files and directories only.
        #expect(node("old").xattrs.map { String(decoding: $0.name, as: UTF8.self) } == ["user.k", "security.capability"])
        #expect(node("s").xattrs.map { String(decoding: $0.name, as: UTF8.self) } == ["security.capability"])
        // Before 1970 and after 2^63-1 ns: the epoch (containerd's boundTime).
        #expect(node("old").mtimeSeconds == 0 && node("old").mtimeNanoseconds == 0)
        #expect(node("late").mtimeSeconds == 0 && node("late").mtimeNanoseconds == 0)
        #expect(node("last").mtimeSeconds == Int64.max / 1_000_000_000 && node("last").mtimeNanoseconds == 854_775_807)
    }

    @Test func hardLinkHeaderMetadataAppliesToTheLinkedNode() throws {
        let file = TarEntry(kind: .regular, path: components("a"), mode: 0o644, uid: 1, mtimeSeconds: 5,
                            xattrs: [ExtendedAttribute("user.a", [1]), ExtendedAttribute("user.b", [2])])
        let link = TarEntry(kind: .hardlink, path: components("b"), hardlinkTarget: components("a"), mode: 0o600, uid: 7, gid: 8,
                            mtimeSeconds: 9, xattrs: [ExtendedAttribute("user.b", [3])])
        let tree = try merge([[(file, "1")], [(link, nil)]])
        let a = try #require(tree.lookup(components("a")))
        #expect(tree.lookup(components("b")) == a)
        let node = tree.nodes[a]
        #expect(node.mode == 0o600 && node.uid == 7 && node.gid == 8 && node.mtimeSeconds == 9)
        // containerd sets the xattrs the link header names and removes none.
        #expect(Set(node.xattrs) == [ExtendedAttribute("user.a", [1]), ExtendedAttribute("user.b", [3])])
    }

    @Test func regularFilesKeepTheirPayloadSizeAndXattrs() throws {
        var tree = MergedTree<Int>()
        tree.beginLayer(name: "l")
        let xattrs = [ExtendedAttribute("user.k", [1, 2])]
        try tree.apply(TarEntry(kind: .regular, path: components("f"), mode: 0o4755, uid: 1, gid: 2, mtimeSeconds: 3,
                                mtimeNanoseconds: 4, size: 99, xattrs: xattrs), payload: 42)
        tree.endLayer()
        let node = tree.nodes[try #require(tree.lookup(components("f")))]
        guard case let .regular(size, payload) = node.content else { Issue.record("not regular"); return }
        #expect(size == 99 && payload == 42)
        #expect(node.mode == 0o4755 && node.uid == 1 && node.gid == 2 && node.mtimeSeconds == 3 && node.mtimeNanoseconds == 4)
        #expect(node.xattrs == xattrs)
        tree.setPayload(7, of: try #require(tree.lookup(components("f"))))
        if case let .regular(size, payload) = tree.nodes[try #require(tree.lookup(components("f")))].content {
            #expect(size == 99 && payload == 7)
        }
    }
}
