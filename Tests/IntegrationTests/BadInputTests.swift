import Foundation
import Testing

/// Every bad input gives one clear error naming the layer or entry, a non-zero exit status and no
/// target (not even a half-written one) left behind.
@Suite struct BadInputTests {
    @Test func everyBadImageFailsCleanlyWithoutATarget() throws {
        guard integrationPrerequisitesMet(tools: ["python3"], root: false) else { return }
        let ws = try Workspace("bad-input")
        let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
        let listing = try Shell.check([python, Build.fixture("make_bad_images.py"), ws.path])
        let cases = listing.split(separator: "\n").map { $0.split(separator: " ", maxSplits: 1).map(String.init) }
        #expect(cases.count == 7)
        for c in cases {
            let (name, mustContain) = (c[0], c[1])
            let target = ws.sub("out-\(name)")
            let r = try Shell.run([Build.ferry, "convert", "oci:\(ws.sub(name)):t", "oci:\(target):t"])
            #expect(r.status == 1, "\(name): exit status \(r.status)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("ferry: error: "), "\(name): \(r.stderr)")
            #expect(r.stderr.contains(mustContain), "\(name): error does not name \(mustContain): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: target), "\(name): target left behind")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: ws.path).filter { $0.contains("ferry-tmp") }
            #expect(leftovers.isEmpty, "\(name): temporary output left behind: \(leftovers)")
        }
    }
}
