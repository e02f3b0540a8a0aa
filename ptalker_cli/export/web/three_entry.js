// The entry point of three.bundle.min.js: the parts of three.js 0.187.0 the HTML player uses
// (see PROVENANCE.md for the command that builds the bundle from it). Not loaded at run time.
export {
  REVISION, WebGLRenderer, Scene, PerspectiveCamera, Mesh, BufferGeometry, BufferAttribute, Float32BufferAttribute,
  MeshStandardMaterial, HemisphereLight, DirectionalLight, AmbientLight, Color, Vector3, Box3, Sphere, Group,
  DoubleSide, SRGBColorSpace, LinearSRGBColorSpace,
} from "three";
export { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
