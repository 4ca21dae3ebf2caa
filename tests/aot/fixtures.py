"""HLO texts for the aot tests, written in the syntax `compiled.as_text()` prints for a GPU.

STEP_HLO is synthetic, with sizes chosen so the expected numbers are easy to compute by hand.
STASH_HLO is cut down by hand from the forward layer loop of a compiled 166M Llama step (18 layers,
batch 66 x 512, MLP 2048 SwiGLU): the instruction names, shapes and wiring of the MLP's stacked
saves are the compiler's; fused computations are shortened to the ops that matter here.
"""

STEP_HLO = r"""HloModule jit_step, is_scheduled=true, entry_computation_layout={(bf16[8192,4096]{1,0}, bf16[4096,2048]{1,0}, f32[1048576]{0}, f32[1048576]{0}, bf16[2,256,4,64]{3,2,1,0}, /*index=5*/bf16[2,256,4,64]{3,2,1,0}, bf16[2,256,4,64]{3,2,1,0}, f32[64]{0}, f32[3,64]{1,0})->(bf16[8192,2048]{1,0}, f32[1048576]{0})}

%gemm_fusion_dot.1_computation (parameter_0: bf16[8192,4096], parameter_1: bf16[4096,2048]) -> bf16[8192,2048] {
  %parameter_0 = bf16[8192,4096]{1,0} parameter(0), metadata={scheduling_name="parameter_0"}
  %parameter_1 = bf16[4096,2048]{1,0} parameter(1), metadata={scheduling_name="parameter_1"}
  ROOT %dot.1 = bf16[8192,2048]{1,0} dot(%parameter_0, %parameter_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/dot_general" scheduling_name="dot.1"}, backend_config={"sizes":["16"]}
}

%fused_add (param_0: f32[1048576], param_1: f32[1048576]) -> f32[1048576] {
  %param_0 = f32[1048576]{0} parameter(0)
  %param_1 = f32[1048576]{0} parameter(1)
  ROOT %add.1 = f32[1048576]{0} add(%param_0, %param_1), metadata={op_name="jit(step)/add"}
}

%fused_multiply (param_0.1: f32[64]) -> f32[64] {
  %param_0.1 = f32[64]{0} parameter(0)
  %constant_2 = f32[] constant(0.5)
  %broadcast.1 = f32[64]{0} broadcast(%constant_2), dimensions={}
  ROOT %multiply.1 = f32[64]{0} multiply(%param_0.1, %broadcast.1)
}

%fused_dynamic_update_slice (param_0.2: f32[3,64], param_1.2: s32[], param_2.2: f32[64]) -> f32[3,64] {
  %param_0.2 = f32[3,64]{1,0} parameter(0)
  %param_2.2 = f32[64]{0} parameter(2)
  %bitcast.2 = f32[1,64]{1,0} bitcast(%param_2.2)
  %param_1.2 = s32[] parameter(1)
  %constant_3 = s32[] constant(0)
  ROOT %dynamic-update-slice.1 = f32[3,64]{1,0} dynamic-update-slice(%param_0.2, %bitcast.2, %param_1.2, %constant_3)
}

%fused_add.1 (param_0.3: s32[]) -> s32[] {
  %param_0.3 = s32[] parameter(0)
  %constant_4 = s32[] constant(1)
  ROOT %add.2 = s32[] add(%param_0.3, %constant_4)
}

%fused_compare (param_0.4: s32[]) -> pred[] {
  %param_0.4 = s32[] parameter(0)
  %constant_5 = s32[] constant(3)
  ROOT %compare.1 = pred[] compare(%param_0.4, %constant_5), direction=LT
}

%region_body (arg_tuple.1: (s32[], f32[64], f32[3,64])) -> (s32[], f32[64], f32[3,64]) {
  %arg_tuple.1 = (s32[], f32[64]{0}, f32[3,64]{1,0}) parameter(0)
  %get-tuple-element.1 = s32[] get-tuple-element(%arg_tuple.1), index=0
  %get-tuple-element.2 = f32[64]{0} get-tuple-element(%arg_tuple.1), index=1
  %get-tuple-element.3 = f32[3,64]{1,0} get-tuple-element(%arg_tuple.1), index=2
  %loop_multiply_fusion = f32[64]{0} fusion(%get-tuple-element.2), kind=kLoop, calls=%fused_multiply, metadata={op_name="jit(step)/jvp(Transformer.features)/while/body/mul"}
  %loop_dynamic_update_slice_fusion = f32[3,64]{1,0} fusion(%get-tuple-element.3, %get-tuple-element.1, %loop_multiply_fusion), kind=kLoop, calls=%fused_dynamic_update_slice, metadata={op_name="jit(step)/jvp(Transformer.features)/while/body/dynamic_update_slice"}
  %loop_add_fusion.1 = s32[] fusion(%get-tuple-element.1), kind=kLoop, calls=%fused_add.1
  ROOT %tuple.1 = (s32[], f32[64]{0}, f32[3,64]{1,0}) tuple(%loop_add_fusion.1, %loop_multiply_fusion, %loop_dynamic_update_slice_fusion)
}

%region_cond (arg_tuple.2: (s32[], f32[64], f32[3,64])) -> pred[] {
  %arg_tuple.2 = (s32[], f32[64]{0}, f32[3,64]{1,0}) parameter(0)
  %get-tuple-element.4 = s32[] get-tuple-element(%arg_tuple.2), index=0
  ROOT %loop_compare_fusion = pred[] fusion(%get-tuple-element.4), kind=kLoop, calls=%fused_compare
}

%region_sum (a.1: f32[], b.1: f32[]) -> f32[] {
  %a.1 = f32[] parameter(0)
  %b.1 = f32[] parameter(1)
  ROOT %add.3 = f32[] add(%a.1, %b.1)
}

ENTRY %main.1 (a: bf16[8192,4096], b: bf16[4096,2048], x: f32[1048576], y: f32[1048576], q: bf16[2,256,4,64], /*index=5*/k: bf16[2,256,4,64], v: bf16[2,256,4,64], h: f32[64], stacked: f32[3,64]) -> (bf16[8192,2048], f32[1048576]) {
  %a = bf16[8192,4096]{1,0} parameter(0), metadata={op_name="a"}
  %b = bf16[4096,2048]{1,0} parameter(1), metadata={op_name="b"}
  %x = f32[1048576]{0} parameter(2)
  %y = f32[1048576]{0} parameter(3)
  %q = bf16[2,256,4,64]{3,2,1,0} parameter(4)
  %k = bf16[2,256,4,64]{3,2,1,0} parameter(5)
  %v = bf16[2,256,4,64]{3,2,1,0} parameter(6)
  %h = f32[64]{0} parameter(7)
  %stacked = f32[3,64]{1,0} parameter(8)
  %gemm_fusion_dot.1 = bf16[8192,2048]{1,0} fusion(%a, %b), kind=kCustom, calls=%gemm_fusion_dot.1_computation, metadata={op_name="jit(step)/dot_general" scheduling_name="gemm_fusion_dot.1"}, backend_config={"operation_queue_id":"0","fusion_backend_config":{"kind":"__triton_nested_gemm_fusion","block_level_fusion_config":{"num_warps":"4","output_tiles":[{"sizes":["64","32"]}]}}}
  %custom-call.1 = (f32[8192,2048]{1,0}, s8[4194304]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul", metadata={op_name="jit(step)/transpose(jvp(Transformer.features))/dot_general"}, backend_config={"operation_queue_id":"0","gemm_backend_config":{"selected_algorithm":"0","alpha_real":1,"beta":0,"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]},"epilogue":"DEFAULT"}}
  %loop_add_fusion = f32[1048576]{0} fusion(%x, %y), kind=kLoop, calls=%fused_add, metadata={op_name="jit(step)/jvp()/add"}
  %dot_product_attention_fwd.1 = (bf16[2,4,256,64]{3,1,2,0}, f32[2,4,256]{2,1,0}, u8[0]{0}) custom-call(%q, %k, %v), custom_call_target="__cudnn$fmhaSoftmax", operand_layout_constraints={bf16[2,256,4,64]{3,2,1,0}, bf16[2,256,4,64]{3,2,1,0}, bf16[2,256,4,64]{3,2,1,0}}, api_version=API_VERSION_STATUS_RETURNING, metadata={op_name="jit(step)/jvp(Transformer.features)/attn/dot_product_attention_fwd"}, backend_config={"operation_queue_id": "0", "cudnn_fmha_backend_config": {"fmha_scale": 0.125, "intermediate_tensor_shape": {"element_type": "BF16", "dimensions": ["2", "4", "256", "256"], "tuple_shapes": []}, "is_flash_attention": true, "mask_type": "CAUSAL", "dropout_rate": 0.0}}
  %constant_1 = s32[] constant(0)
  %tuple.0 = (s32[], f32[64]{0}, f32[3,64]{1,0}) tuple(%constant_1, %h, %stacked)
  %while.1 = (s32[], f32[64]{0}, f32[3,64]{1,0}) while(%tuple.0), condition=%region_cond, body=%region_body, metadata={op_name="jit(step)/jvp(Transformer.features)/while"}, backend_config={"known_trip_count":{"n":"3"},"known_init_step":{"init":"0","step":"1"}}
  %all-reduce-start = f32[1048576]{0} all-reduce-start(%loop_add_fusion), channel_id=1, replica_groups={}, to_apply=%region_sum, metadata={op_name="jit(step)/psum"}
  %all-reduce-done = f32[1048576]{0} all-reduce-done(%all-reduce-start)
  ROOT %tuple.2 = (bf16[8192,2048]{1,0}, f32[1048576]{0}) tuple(%gemm_fusion_dot.1, %all-reduce-done)
}
"""

# A loop whose trip count the compiler does not know: counted once and flagged.
UNKNOWN_TRIP_HLO = STEP_HLO.replace('backend_config={"known_trip_count":{"n":"3"},', 'backend_config={')

STASH_HLO = r"""HloModule jit_step, is_scheduled=true

%fused_convert.4 (param_0.607: f32[18,768,2048], param_1.751: s32[]) -> bf16[1,768,2048] {
  %param_0.607 = f32[18,768,2048]{2,1,0} parameter(0)
  %param_1.751 = s32[] parameter(1)
  %constant_0 = s32[] constant(0)
  %dynamic_slice.1 = f32[1,768,2048]{2,1,0} dynamic-slice(%param_0.607, %param_1.751, %constant_0, %constant_0), dynamic_slice_sizes={1,768,2048}
  ROOT %convert.1 = bf16[1,768,2048]{2,1,0} convert(%dynamic_slice.1)
}

%fused_convert.1 (param_0.789: f32[66,512,768]) -> bf16[33792,768] {
  %param_0.789 = f32[66,512,768]{2,1,0} parameter(0)
  %convert.2 = bf16[66,512,768]{2,1,0} convert(%param_0.789)
  ROOT %bitcast.1 = bf16[33792,768]{1,0} bitcast(%convert.2)
}

%gemm_fusion_dot.57_computation (parameter_0.5: bf16[33792,768], parameter_1.5: bf16[768,2048]) -> bf16[33792,2048] {
  %parameter_0.5 = bf16[33792,768]{1,0} parameter(0)
  %parameter_1.5 = bf16[768,2048]{1,0} parameter(1)
  ROOT %dot.83 = bf16[33792,2048]{1,0} dot(%parameter_0.5, %parameter_1.5), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/closed_call/blocks/blocks._block/mlp/w1/dot_general"}
}

%fused_multiply (param_0.553: bf16[33792,2048], param_1.1058: bf16[33792,2048]) -> bf16[66,512,2048] {
  %param_0.553 = bf16[33792,2048]{1,0} parameter(0)
  %param_1.1058 = bf16[33792,2048]{1,0} parameter(1)
  %logistic.1 = bf16[33792,2048]{1,0} logistic(%param_1.1058)
  %multiply.1 = bf16[33792,2048]{1,0} multiply(%param_1.1058, %logistic.1)
  %multiply.2 = bf16[33792,2048]{1,0} multiply(%multiply.1, %param_0.553)
  ROOT %bitcast.2 = bf16[66,512,2048]{2,1,0} bitcast(%multiply.2)
}

%fused_dynamic_update_slice.5 (param_0.90: bf16[18,66,512,2048], param_1.99: s32[], param_2.794: bf16[33792,2048]) -> bf16[18,66,512,2048] {
  %param_0.90 = bf16[18,66,512,2048]{3,2,1,0} parameter(0)
  %param_2.794 = bf16[33792,2048]{1,0} parameter(2)
  %logistic.2 = bf16[33792,2048]{1,0} logistic(%param_2.794)
  %mul.732.3 = bf16[33792,2048]{1,0} multiply(%param_2.794, %logistic.2)
  %bitcast.66.1 = bf16[1,66,512,2048]{3,2,1,0} bitcast(%mul.732.3)
  %param_1.99 = s32[] parameter(1)
  %constant_1439_37 = s32[] constant(0)
  ROOT %dynamic_update_slice.269.1 = bf16[18,66,512,2048]{3,2,1,0} dynamic-update-slice(%param_0.90, %bitcast.66.1, %param_1.99, %constant_1439_37, %constant_1439_37, /*index=5*/%constant_1439_37)
}

%fused_dynamic_update_slice.7 (param_0.92: bf16[18,66,512,2048], param_1.103: s32[], param_2.778: bf16[33792,2048]) -> bf16[18,66,512,2048] {
  %param_0.92 = bf16[18,66,512,2048]{3,2,1,0} parameter(0)
  %param_2.778 = bf16[33792,2048]{1,0} parameter(2)
  %bitcast.64.1 = bf16[1,66,512,2048]{3,2,1,0} bitcast(%param_2.778)
  %copy.302 = bf16[1,66,512,2048]{3,2,1,0} copy(%bitcast.64.1)
  %param_1.103 = s32[] parameter(1)
  %constant_1439_33 = s32[] constant(0)
  ROOT %dynamic_update_slice.266.1 = bf16[18,66,512,2048]{3,2,1,0} dynamic-update-slice(%param_0.92, %copy.302, %param_1.103, %constant_1439_33, %constant_1439_33, /*index=5*/%constant_1439_33)
}

%fused_dynamic_update_slice.4 (param_0.89: bf16[18,66,512,2048], param_1.97: s32[], param_2.780: bf16[66,512,2048]) -> bf16[18,66,512,2048] {
  %param_0.89 = bf16[18,66,512,2048]{3,2,1,0} parameter(0)
  %param_2.780 = bf16[66,512,2048]{2,1,0} parameter(2)
  %bitcast.67.1 = bf16[1,66,512,2048]{3,2,1,0} bitcast(%param_2.780)
  %param_1.97 = s32[] parameter(1)
  %constant_1439_35 = s32[] constant(0)
  ROOT %dynamic_update_slice.271.1 = bf16[18,66,512,2048]{3,2,1,0} dynamic-update-slice(%param_0.89, %bitcast.67.1, %param_1.97, %constant_1439_35, %constant_1439_35, /*index=5*/%constant_1439_35)
}

%fused_dynamic_update_slice.29 (param_0.734: bf16[18,768,2048], param_1.950: s32[], param_2.774: f32[18,768,2048]) -> bf16[18,768,2048] {
  %param_0.734 = bf16[18,768,2048]{2,1,0} parameter(0)
  %param_2.774 = f32[18,768,2048]{2,1,0} parameter(2)
  %param_1.950 = s32[] parameter(1)
  %constant_6 = s32[] constant(0)
  %dynamic_slice.2 = f32[1,768,2048]{2,1,0} dynamic-slice(%param_2.774, %param_1.950, %constant_6, %constant_6), dynamic_slice_sizes={1,768,2048}
  %convert.3 = bf16[1,768,2048]{2,1,0} convert(%dynamic_slice.2)
  ROOT %dynamic_update_slice.3 = bf16[18,768,2048]{2,1,0} dynamic-update-slice(%param_0.734, %convert.3, %param_1.950, %constant_6, %constant_6)
}

%fused_add.2 (param_0.820: s32[]) -> s32[] {
  %param_0.820 = s32[] parameter(0)
  %constant_7 = s32[] constant(1)
  ROOT %add.1 = s32[] add(%param_0.820, %constant_7)
}

%region_2.44 (arg_tuple.19: (s32[], f32[66,512,768], f32[18,768,2048], bf16[18,66,512,2048], bf16[18,66,512,2048], /*index=5*/bf16[18,66,512,2048], bf16[18,66,512,2048], bf16[18,768,2048])) -> (s32[], f32[66,512,768], f32[18,768,2048], bf16[18,66,512,2048], bf16[18,66,512,2048], /*index=5*/bf16[18,66,512,2048], bf16[18,66,512,2048], bf16[18,768,2048]) {
  %arg_tuple.19 = (s32[], f32[66,512,768]{2,1,0}, f32[18,768,2048]{2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, /*index=5*/bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,768,2048]{2,1,0}) parameter(0)
  %get-tuple-element.1076 = s32[] get-tuple-element(%arg_tuple.19), index=0
  %get-tuple-element.1077 = f32[66,512,768]{2,1,0} get-tuple-element(%arg_tuple.19), index=1
  %get-tuple-element.1155 = f32[18,768,2048]{2,1,0} get-tuple-element(%arg_tuple.19), index=2
  %loop_convert_fusion.4 = bf16[1,768,2048]{2,1,0} fusion(%get-tuple-element.1155, %get-tuple-element.1076), kind=kLoop, calls=%fused_convert.4, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/closed_call/blocks/blocks._block/mlp/w1/convert_element_type"}
  %bitcast.1 = bf16[768,2048]{1,0} bitcast(%loop_convert_fusion.4)
  %loop_convert_fusion.1 = bf16[33792,768]{1,0} fusion(%get-tuple-element.1077), kind=kLoop, calls=%fused_convert.1, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/closed_call/blocks/blocks._block/ln_2/convert_element_type"}
  %gemm_fusion_dot.57 = bf16[33792,2048]{1,0} fusion(%loop_convert_fusion.1, %bitcast.1), kind=kCustom, calls=%gemm_fusion_dot.57_computation, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/closed_call/blocks/blocks._block/mlp/w1/dot_general"}, backend_config={"operation_queue_id":"0","fusion_backend_config":{"kind":"__triton_nested_gemm_fusion"}}
  %loop_multiply_fusion = bf16[66,512,2048]{2,1,0} fusion(%gemm_fusion_dot.57, %gemm_fusion_dot.57), kind=kLoop, calls=%fused_multiply, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/closed_call/blocks/blocks._block/mlp/mul"}
  %get-tuple-element.1100 = bf16[18,66,512,2048]{3,2,1,0} get-tuple-element(%arg_tuple.19), index=3
  %loop_dynamic_update_slice_fusion.5 = bf16[18,66,512,2048]{3,2,1,0} fusion(%get-tuple-element.1100, %get-tuple-element.1076, %gemm_fusion_dot.57), kind=kLoop, calls=%fused_dynamic_update_slice.5, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/jit(dynamic_update_index_in_dim)/dynamic_update_slice"}
  %get-tuple-element.1101 = bf16[18,66,512,2048]{3,2,1,0} get-tuple-element(%arg_tuple.19), index=4
  %loop_dynamic_update_slice_fusion.7 = bf16[18,66,512,2048]{3,2,1,0} fusion(%get-tuple-element.1101, %get-tuple-element.1076, %gemm_fusion_dot.57), kind=kCustom, calls=%fused_dynamic_update_slice.7, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/jit(dynamic_update_index_in_dim)/dynamic_update_slice"}, backend_config={"operation_queue_id":"0","fusion_backend_config":{"kind":"__custom_fusion","custom_fusion_config":{"name":"dynamic_slice_fusion","kernel_index":0}}}
  %get-tuple-element.1102 = bf16[18,66,512,2048]{3,2,1,0} get-tuple-element(%arg_tuple.19), index=5
  %loop_dynamic_update_slice_fusion.4 = bf16[18,66,512,2048]{3,2,1,0} fusion(%get-tuple-element.1102, %get-tuple-element.1076, %loop_multiply_fusion), kind=kCustom, calls=%fused_dynamic_update_slice.4, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/jit(dynamic_update_index_in_dim)/dynamic_update_slice"}
  %get-tuple-element.1098 = bf16[18,768,2048]{2,1,0} get-tuple-element(%arg_tuple.19), index=7
  %loop_dynamic_update_slice_fusion.29 = bf16[18,768,2048]{2,1,0} fusion(%get-tuple-element.1098, %get-tuple-element.1076, %get-tuple-element.1155), kind=kLoop, calls=%fused_dynamic_update_slice.29, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while/body/jit(dynamic_update_index_in_dim)/dynamic_update_slice"}
  %get-tuple-element.1103 = bf16[18,66,512,2048]{3,2,1,0} get-tuple-element(%arg_tuple.19), index=6
  %loop_add_fusion.2 = s32[] fusion(%get-tuple-element.1076), kind=kLoop, calls=%fused_add.2
  ROOT %tuple.116 = (s32[], f32[66,512,768]{2,1,0}, f32[18,768,2048]{2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, /*index=5*/bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,768,2048]{2,1,0}) tuple(%loop_add_fusion.2, %get-tuple-element.1077, %get-tuple-element.1155, %loop_dynamic_update_slice_fusion.5, %loop_dynamic_update_slice_fusion.7, /*index=5*/%loop_dynamic_update_slice_fusion.4, %get-tuple-element.1103, %loop_dynamic_update_slice_fusion.29)
}

%region_5.45 (arg_tuple.18: (s32[], f32[66,512,768], f32[18,768,2048], bf16[18,66,512,2048], bf16[18,66,512,2048], /*index=5*/bf16[18,66,512,2048], bf16[18,66,512,2048], bf16[18,768,2048])) -> pred[] {
  %arg_tuple.18 = (s32[], f32[66,512,768]{2,1,0}, f32[18,768,2048]{2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, /*index=5*/bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,768,2048]{2,1,0}) parameter(0)
  %get-tuple-element.1 = s32[] get-tuple-element(%arg_tuple.18), index=0
  %constant_8 = s32[] constant(18)
  ROOT %compare.1 = pred[] compare(%get-tuple-element.1, %constant_8), direction=LT
}

ENTRY %main.133 (x: f32[66,512,768], w1: f32[18,768,2048], s0: bf16[18,66,512,2048], s1: bf16[18,66,512,2048], s2: bf16[18,66,512,2048], /*index=5*/s3: bf16[18,66,512,2048], c: bf16[18,768,2048]) -> (s32[], f32[66,512,768], f32[18,768,2048], bf16[18,66,512,2048], bf16[18,66,512,2048], /*index=5*/bf16[18,66,512,2048], bf16[18,66,512,2048], bf16[18,768,2048]) {
  %x = f32[66,512,768]{2,1,0} parameter(0)
  %w1 = f32[18,768,2048]{2,1,0} parameter(1)
  %s0 = bf16[18,66,512,2048]{3,2,1,0} parameter(2)
  %s1 = bf16[18,66,512,2048]{3,2,1,0} parameter(3)
  %s2 = bf16[18,66,512,2048]{3,2,1,0} parameter(4)
  %s3 = bf16[18,66,512,2048]{3,2,1,0} parameter(5)
  %c = bf16[18,768,2048]{2,1,0} parameter(6)
  %constant_9 = s32[] constant(0)
  %tuple.1 = (s32[], f32[66,512,768]{2,1,0}, f32[18,768,2048]{2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, /*index=5*/bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,768,2048]{2,1,0}) tuple(%constant_9, %x, %w1, %s0, %s1, /*index=5*/%s2, %s3, %c)
  ROOT %while.170 = (s32[], f32[66,512,768]{2,1,0}, f32[18,768,2048]{2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, /*index=5*/bf16[18,66,512,2048]{3,2,1,0}, bf16[18,66,512,2048]{3,2,1,0}, bf16[18,768,2048]{2,1,0}) while(%tuple.1), condition=%region_5.45, body=%region_2.44, metadata={op_name="jit(step)/while/body/closed_call/jvp(Transformer.features)/while" scheduling_name="while.170"}, backend_config={"known_trip_count":{"n":"18"},"known_init_step":{"init":"0","step":"1"}}
}
"""
