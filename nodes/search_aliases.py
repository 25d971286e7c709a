"""Search words for the node search box (ComfyUI reads ``SEARCH_ALIASES`` since 0.8; older hosts ignore it).

One table, applied at registration (``nodes/__init__.py``), so the words users type when they look for this kind of
pack ("regional prompt", "gligen", "bounding box", ...) find the main nodes.
"""
SEARCH_ALIASES = {
    "InstanceDiffusionConditioning": ["instance diffusion", "regional prompt", "gligen", "layout", "bounding box",
                                      "grounding", "per-object prompt", "mask prompt", "instance prompt"],
    "ApplyUniFusion": ["instance diffusion", "unifusion", "gligen", "regional prompt", "layout", "grounding"],
    "ApplyScaleU": ["instance diffusion", "scaleu", "freeu"],
    "LoadInstanceDiffusion": ["instance diffusion", "gligen", "load weights", "layout model"],
    "InstanceLayoutEditor": ["instance diffusion", "layout", "bounding box", "draw boxes", "regional prompt",
                             "mask editor", "scribble", "canvas"],
    "InstanceLayout": ["instance diffusion", "layout", "bounding box", "regional prompt", "canvas"],
    "InstanceBox": ["instance diffusion", "bounding box", "bbox", "regional prompt", "gligen box"],
    "InstancePoint": ["instance diffusion", "point", "keypoint", "regional prompt"],
    "InstanceScribble": ["instance diffusion", "scribble", "polyline", "regional prompt"],
    "InstanceMask": ["instance diffusion", "mask", "regional prompt", "segmentation"],
    "InstancesFromBoundingBoxes": ["instance diffusion", "bounding box", "bbox", "detection", "rt-detr",
                                   "object detection", "regional prompt"],
    "LayoutToBoundingBoxes": ["instance diffusion", "bounding box", "bbox", "draw bboxes", "layout"],
    "LoadInstanceLayout": ["instance diffusion", "layout json", "bounding box", "load layout"],
    "InstanceLayoutPreview": ["instance diffusion", "layout", "bounding box", "draw boxes", "preview"],
    "InstanceLayoutPlanner": ["instance diffusion", "llm layout", "layout gpt", "bounding box", "regional prompt"],
    "InstanceDiffusionKSampler": ["instance diffusion", "multi-instance sampler", "mis", "ksampler", "plms"],
    "InstanceDiffusionMISGuider": ["instance diffusion", "multi-instance sampler", "guider"],
    "InstanceDiffusionPLMSSampler": ["instance diffusion", "plms", "official sampler"],
    "InstanceDiffusionOfficialSchedule": ["instance diffusion", "ddim_uniform", "official schedule", "sigmas"],
}
