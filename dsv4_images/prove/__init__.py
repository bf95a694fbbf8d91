"""`build.py prove`: execute, on a machine without a GPU, what can be executed of the sm images'
claims: vLLM's parser and engine config for the entrypoint's commands (worker/ runs inside prove's
venv), the per-layer quantization schemes and the patches' effect, vLLM's CMake arch table, one real
kernel compiled and its SASS checked, and what the runtime must compile or fetch at serve time.
Modules: settings (the matrix adapter), env (the cached venv and CUDA toolchain), stub (our libcuda
stub), engine, archs, kernel, runtime, report, command (the CLI entry)."""
