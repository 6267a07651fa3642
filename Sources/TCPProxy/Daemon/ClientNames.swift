extension ProxyHandler {
    /// The handler starts a program for a connection (an access control program or a
    /// handler program), so the connection needs the PROXY_ variables.
    public var runsProgram: Bool {
        if accessControlProgram != nil { return true }
        if case .exec = target { return true }
        return false
    }
}

extension ProxyConfiguration {
    /// Some handler starts a program (see `ProxyHandler.runsProgram`).
    public var runsPrograms: Bool { services.contains { $0.handlers.contains(where: \.runsProgram) } }
}
