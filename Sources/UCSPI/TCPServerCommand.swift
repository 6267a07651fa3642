public enum TCPServerCommand { public static func main(_ a: [String]) -> Never { fatalError() } }
