import Socks

FrozenTools.main { FrozenTools.dump(.configuration, arguments: $0) }
