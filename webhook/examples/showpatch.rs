fn main() {
    let path = std::env::args().nth(1).unwrap();
    let body = std::fs::read(&path).unwrap();
    let mi_text = std::fs::read_to_string("config/samples/meshinstall.yaml").unwrap();
    let mi = mizzen::cli::mesh_install_from_yaml("x", &mi_text).unwrap();
    let config = mizzen::inject::Injector::compile(mizzen::inject::InjectionConfig::from_mesh_install(&mi.spec));
    let mut request = mizzen::admission::parse(&body).unwrap();
    let (response, _) = mizzen::admission::respond(&mut request, Some(&config), "default", None);
    println!("{}", String::from_utf8(mizzen::admission::to_body(&response)).unwrap());
}
