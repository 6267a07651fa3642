/// Bastion's release, as the tools report it (sockd's `-ver`, and the package built from it).
public enum BastionVersion {
    public static let string = "0.9.0"
}
