public import ArgumentParser

/// The `ferry` command line.
public struct FerryCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "ferry", abstract: "Lazy-loading container images on EROFS.")
    public init() {}
}

/// Entry point of the `ferry` executable.
public func runFerry() { FerryCommand.main() }
