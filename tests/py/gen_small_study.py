#!/usr/bin/env python3
"""Write a small FT / LoRA / DoRA study into OUTDIR (cwd if none): a 6-layer base with
q_proj/v_proj 64x64 (F32), and for each method a Trainer folder with 4 checkpoints whose
updates grow with the step. For the plot and regression tests; seeded."""
import json
import os
import struct
import sys

import numpy as np

if len(sys.argv) > 1:
    os.makedirs(sys.argv[1], exist_ok=True)
    os.chdir(sys.argv[1])
def write(path, tensors):
    h={}; off=0; blobs=[]
    for k,v in tensors.items():
        v=np.ascontiguousarray(v.astype(np.float32))
        h[k]={"dtype":"F32","shape":list(v.shape),"data_offsets":[off,off+v.nbytes]}; off+=v.nbytes; blobs.append(v.tobytes())
    hj=json.dumps(h).encode(); open(path,'wb').write(struct.pack('<Q',len(hj))+hj+b''.join(blobs))
rng=np.random.default_rng(1); D=64; NL=6
names=[f'model.layers.{l}.self_attn.{m}.weight' for l in range(NL) for m in ('q_proj','v_proj')]
W={n: rng.standard_normal((D,D))*0.05 for n in names}
write('base.safetensors', W)
for step in (100,200,300,400):
    d=f'ft/checkpoint-{step}'; os.makedirs(d,exist_ok=True)
    write(d+'/model.safetensors', {n: w*(1+0.002*step/100*rng.standard_normal((D,1)))+0.0005*step/100*rng.standard_normal((D,D)) for n,w in W.items()})
    json.dump({"global_step":step},open(d+'/trainer_state.json','w'))
    for meth in ('lora','dora'):
        d=f'{meth}/checkpoint-{step}'; os.makedirs(d,exist_ok=True)
        t={}
        for n,w in W.items():
            m='base_model.model.'+n[:-7]
            t[m+'.lora_A.weight']=rng.standard_normal((8,D))*0.1*step/400
            t[m+'.lora_B.weight']=rng.standard_normal((D,8))*0.01*step/400
            if meth=='dora':
                t[m+'.lora_magnitude_vector']=np.linalg.norm(w,axis=1)*(1+0.01*rng.standard_normal(D)*step/400)
        write(d+'/adapter_model.safetensors',t)
        json.dump({"peft_type":"LORA","r":8,"lora_alpha":16,"use_dora":meth=='dora'},open(d+'/adapter_config.json','w'))
