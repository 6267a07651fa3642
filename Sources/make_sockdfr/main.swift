import Socks

FrozenTools.main { FrozenTools.make(.routes, arguments: $0) }
