"""What tests, benchmarks and scripts share (never shipped to users' nodes, never imported by the pack):

  comfy_harness      import a ComfyUI tree in this process, load the pack as ComfyUI does, run prompts
  host_session       one host + the pack for scripts and benchmarks
  host_fixtures      stub CLIP, box layouts, patched tiny models, a sampling helper (host tier)
  tiny_models        tiny random SD1.5-shaped UNets/CLIP/VAE and add-on weights in the official key layout
  workflow_convert   ComfyUI UI-format workflows -> API prompts, and the checks a workflow must pass
  comfy_server       a real ComfyUI server process (browser tests)
  parity, parity_scenario, recipe   the official-code fixture sets and the recipe weights
  synthetic_checkpoints            hostile and well-formed weight files built on the fly
  chat_server        a scripted OpenAI-compatible chat server on 127.0.0.1 (planner tests)
  pytest_plugin      keeps pytest from importing the repo root's ComfyUI __init__.py
"""
