public import OCI

/// Opens the image source a reference names.
public enum ImageSources {
    public static func open(_ reference: ImageReference) throws -> any ImageSource {
        switch reference {
        case let .ociLayout(path, tag): return try OCILayoutSource(directory: path, tag: tag)
        case let .dockerArchive(path): return try DockerArchiveSource(path: path)
        case .registry:
            throw ConversionError.unsupportedTransport("\(reference): registry sources are not supported by this build")
        }
    }
}
