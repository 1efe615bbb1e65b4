public import Foundation
import GRDB

/// What containerd calls a snapshot's kind.
public enum SnapshotKind: Int, Sendable, Codable, CustomStringConvertible {
    case view = 1, active = 2, committed = 3

    public var description: String {
        switch self {
        case .view: return "view"
        case .active: return "active"
        case .committed: return "committed"
        }
    }
}

/// One snapshot as the metadata database holds it.
public struct SnapshotRecord: Sendable, Equatable {
    /// Row id: names the snapshot's directory (`snapshots/<id>`).
    public var id: Int64
    /// The key of an active or view snapshot, the name of a committed one (one namespace).
    public var key: String
    /// The committed snapshot this one is on top of ("" for none).
    public var parent: String
    public var kind: SnapshotKind
    public var labels: [String: String]
    public var created: Date
    public var updated: Date
    /// Bytes and inodes of a committed snapshot's own directory, measured at commit.
    public var size: Int64
    public var inodes: Int64
    /// A Ferry layer recorded without content (containerd downloads and unpacks nothing for it).
    public var remote: Bool
    /// For a Ferry bootstrap layer: the hex digest of its bootstrap, which names its lazy mount.
    public var lazyImage: String?
    /// For a Ferry bootstrap layer: what ferryd mounts (`docker://repo@manifest-digest`).
    public var lazyReference: String?
}

/// Snapshot metadata in SQLite (GRDB over Debian's libsqlite3), changed in transactions, so it
/// survives ferryd restarts and crashes: containerd's garbage collector trusts that `List` shows
/// every snapshot that exists.
public final class SnapshotStore: Sendable {
    private let database: DatabaseQueue

    /// Opens (creating and migrating) the database at `path`.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        // SQLite creates the file with the process umask; snapshot metadata is root's alone (its
        // journal files take the database's mode).
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) }
        try? FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        database = try DatabaseQueue(path: path, configuration: configuration)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("snapshots-v1") { db in
            try db.execute(sql: """
                CREATE TABLE snapshot (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    key TEXT NOT NULL UNIQUE,
                    parent TEXT NOT NULL DEFAULT '',
                    kind INTEGER NOT NULL,
                    labels TEXT NOT NULL DEFAULT '{}',
                    created REAL NOT NULL,
                    updated REAL NOT NULL,
                    size INTEGER NOT NULL DEFAULT 0,
                    inodes INTEGER NOT NULL DEFAULT 0,
                    remote INTEGER NOT NULL DEFAULT 0,
                    lazy_image TEXT,
                    lazy_reference TEXT
                );
                CREATE INDEX snapshot_parent ON snapshot(parent);
                CREATE INDEX snapshot_lazy ON snapshot(lazy_image);
                """)
        }
        try migrator.migrate(database)
    }

    /// The snapshot named `key`, or nil.
    public func record(_ key: String) async throws -> SnapshotRecord? {
        try await database.read { db in try Row.fetchOne(db, sql: "SELECT * FROM snapshot WHERE key = ?", arguments: [key]).map(Self.decode) }
    }

    /// Every snapshot.
    public func all() async throws -> [SnapshotRecord] {
        try await database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM snapshot ORDER BY id").map(Self.decode) }
    }

    /// `key` and its ancestors, nearest first (stops at a missing parent).
    public func chain(from key: String) async throws -> [SnapshotRecord] {
        try await database.read { db in
            var out: [SnapshotRecord] = []
            var next = key
            while !next.isEmpty, out.count < 4096,
                  let row = try Row.fetchOne(db, sql: "SELECT * FROM snapshot WHERE key = ?", arguments: [next]) {
                let record = Self.decode(row)
                out.append(record)
                next = record.parent
            }
            return out
        }
    }

    /// Runs `body` in one write transaction.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await database.write { db in try body(Transaction(db: db)) }
    }

    /// The operations a write transaction offers.
    public struct Transaction {
        let db: Database

        public func record(_ key: String) throws -> SnapshotRecord? {
            try Row.fetchOne(db, sql: "SELECT * FROM snapshot WHERE key = ?", arguments: [key]).map(SnapshotStore.decode)
        }

        public func children(of key: String) throws -> Int {
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshot WHERE parent = ?", arguments: [key]) ?? 0
        }

        public func users(ofLazyImage image: String) throws -> Int {
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshot WHERE lazy_image = ?", arguments: [image]) ?? 0
        }

        /// Inserts a new snapshot; returns it with its id.
        @discardableResult
        public func insert(key: String, parent: String, kind: SnapshotKind, labels: [String: String], remote: Bool = false,
                           lazyImage: String? = nil, lazyReference: String? = nil) throws -> SnapshotRecord {
            let now = Date()
            try db.execute(sql: """
                INSERT INTO snapshot (key, parent, kind, labels, created, updated, remote, lazy_image, lazy_reference)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [key, parent, kind.rawValue, SnapshotStore.encode(labels), now.timeIntervalSince1970,
                                 now.timeIntervalSince1970, remote ? 1 : 0, lazyImage, lazyReference])
            return SnapshotRecord(id: db.lastInsertedRowID, key: key, parent: parent, kind: kind, labels: labels, created: now,
                                  updated: now, size: 0, inodes: 0, remote: remote, lazyImage: lazyImage, lazyReference: lazyReference)
        }

        /// Turns the active snapshot `key` into the committed snapshot `name`.
        public func commit(key: String, as name: String, labels: [String: String], size: Int64, inodes: Int64) throws {
            try db.execute(sql: "UPDATE snapshot SET key = ?, kind = ?, labels = ?, updated = ?, size = ?, inodes = ? WHERE key = ?",
                           arguments: [name, SnapshotKind.committed.rawValue, SnapshotStore.encode(labels), Date().timeIntervalSince1970,
                                       size, inodes, key])
        }

        public func setLabels(_ key: String, _ labels: [String: String]) throws {
            try db.execute(sql: "UPDATE snapshot SET labels = ?, updated = ? WHERE key = ?",
                           arguments: [SnapshotStore.encode(labels), Date().timeIntervalSince1970, key])
        }

        public func delete(_ key: String) throws {
            try db.execute(sql: "DELETE FROM snapshot WHERE key = ?", arguments: [key])
        }
    }

    static func decode(_ row: Row) -> SnapshotRecord {
        let labelText: String = row["labels"]
        let labels = (try? JSONDecoder().decode([String: String].self, from: Data(labelText.utf8))) ?? [:]
        return SnapshotRecord(id: row["id"], key: row["key"], parent: row["parent"],
                              kind: SnapshotKind(rawValue: row["kind"]) ?? .committed, labels: labels,
                              created: Date(timeIntervalSince1970: row["created"]), updated: Date(timeIntervalSince1970: row["updated"]),
                              size: row["size"], inodes: row["inodes"], remote: (row["remote"] as Int) != 0,
                              lazyImage: row["lazy_image"], lazyReference: row["lazy_reference"])
    }

    static func encode(_ labels: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? encoder.encode(labels)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
