/// Why a daemon could not start or reload, with a message naming what and where.
public struct StartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
