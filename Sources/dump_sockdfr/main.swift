import Socks

FrozenTools.main { FrozenTools.dump(.routes, arguments: $0) }
