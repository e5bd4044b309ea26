"""Family-aware structure checks of an exported ONNX graph: was every re-param block converted?

A BatchNormalization count alone proves little: the TorchScript exporter folds an eval-mode BN
into the Conv before it by itself (an unconverted RepOpt-VGG or OREPA block exports as one Conv),
while some families keep stand-alone BNs that have no linear operator to fold into (RepMLPNet's
``prebn1`` / ``prebn2`` / ``head_norm`` follow a residual sum). :func:`graph_checks` therefore
checks, with the converted ``model`` at hand:

1. **fused operator, exactly once** - for every fused block, the parameters of its fused
   operator are found by identity (a deploy-form block's ``equivalent_kernel_bias()`` returns
   them, e.g. ``rbr_reparam`` of RepVGG, ``cheap_operation`` of RepGhost, ``fc3`` of RepMLP):
   exactly one Conv / Gemm / MatMul node of the graph must take that weight initializer, and
   the same node the fused bias. An unconverted model has no such initializer (RepVGG, ACB,
   DBB, OREPA, RepOpt: the name does not exist) or uses the weight without the bias (RepMLP's
   ``fc3`` has none before locality injection);
2. **no training-time branch** - every node scope of the TorchScript exporter
   (``/backbone/stage1/stage1.0/rbr_dense/conv/Conv``) must name modules that exist in the
   converted model: ``rbr_dense``, ``rbr_1x1``, ``rbr_identity``, ``fusion_bn``, ``repconv3``,
   ``dbb_avg``, RepVGGplus's auxiliary classifiers ... are gone after conversion, so a node under
   them is a remnant (a failure);
3. **BatchNormalization nodes** - a BN inside a fused block's scope is a failure; a BN that
   directly follows a Conv / Gemm whose only consumer it is could have been folded (a
   failure); every other BN is stand-alone (no linear neighbour it was folded into by the
   family's own deploy form): allowed and listed in ``standalone_batch_norms``;
4. **deploy flags** - every re-param block and container (backbone, RepVGGplus head) of the
   model reports ``deploy=True``.

Without ``model`` only what the graph itself shows is checked (per fused block: no BN and no
node of a known training-time branch inside its scope, at least one Conv); ``note`` says so.
With the dynamo exporter (nodes carry no module scope) checks 2-3 fall back to op counts.

The result keeps the keys :func:`rep_mm.deploy.checks.judge` reads (``batch_norm_nodes``:
the BNs that fail check 3, ``scopes_named``, ``blocks_not_one_conv``: the blocks that fail
check 1 or 2, with the reason) and adds ``failures`` (one line each; empty = passed),
``passed``, ``batch_norm_nodes_total``, ``standalone_batch_norms``, ``fused_operators``,
``remnant_nodes`` and ``modules_not_deployed``.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

__all__ = ['graph_checks', 'TRAINING_BRANCH_NAMES', 'node_module_path']

LINEAR_OPS = ('Conv', 'ConvTranspose', 'Gemm', 'MatMul')
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Attribute names of the training-time branches rep_mm's blocks delete on conversion (used
# only without a model; tests/test_deploy/test_families.py checks it covers every block family).
TRAINING_BRANCH_NAMES = frozenset({
    'rbr_dense', 'rbr_1x1', 'rbr_identity',                       # RepVGG / OREPA-RepVGG
    'fusion_bn', 'fusion_scale', 'final_bn',                      # RepGhost / RepOpt-GhostNet
    'fc3_bn',                                                     # RepMLP (+ repconv<k>)
    'square_conv', 'square_bn', 'ver_conv', 'hor_conv', 'ver_bn', 'hor_bn',   # ACB
    'dbb_origin', 'dbb_1x1', 'dbb_avg', 'dbb_1x1_kxk',            # DBB
    'scale_conv', 'conv_1x1', 'scale_1x1', 'scale_identity',      # RepOpt CSLA / hs
    'stage1_aux', 'stage2_aux', 'stage3_first_aux',               # RepVGGplus aux heads
})
_BRANCH_PATTERN = re.compile(r'^repconv\d+$')
# TorchScript names the scope of a module's second, third ... call '<name>_1', '<name>_2' ...
_REPEATED_CALL = re.compile(r'^(.+)_(\d+)$')


def _is_branch_name(name: str) -> bool:
    return name in TRAINING_BRANCH_NAMES or bool(_BRANCH_PATTERN.match(name))


def _scope_components(node_name: str) -> List[str]:
    """``/backbone/stage1/stage1.0/rbr_reparam/Conv`` -> ``['backbone', 'stage1', 'stage1.0',
    'rbr_reparam']`` (the last part is the operator); ``[]`` for unscoped names."""
    if not node_name.startswith('/'):
        return []
    return [part for part in node_name.split('/')[1:-1] if part]


class _ModuleIndex:
    """Module names of a model indexed by every dotted suffix (``a.b.0`` -> ``0``, ``b.0``,
    ``a.b.0``), to resolve TorchScript scope components quickly."""

    def __init__(self, modules: Dict[str, nn.Module]) -> None:
        self.modules = modules
        self.by_suffix: Dict[str, List[str]] = defaultdict(list)
        for name in modules:
            if name:
                parts = name.split('.')
                for i in range(len(parts)):
                    self.by_suffix['.'.join(parts[i:])].append(name)
        self.cache: Dict[Tuple[str, str], Optional[str]] = {}

    def child(self, path: str, component: str) -> Optional[str]:
        key = (path, component)
        if key not in self.cache:
            self.cache[key] = self._child(path, component)
        return self.cache[key]

    def _child(self, path: str, component: str) -> Optional[str]:
        prefix = f'{path}.' if path else ''
        found = []
        for name in self.by_suffix.get(component, ()):
            if not name.startswith(prefix) or name == path:
                continue
            between = name[len(prefix):].split('.')[:-1]
            current, ok = path, True
            for part in between:  # only containers may sit in between (no scope of their own
                # when not called: a ModuleList, or a Sequential iterated by its owner)
                current = f'{current}.{part}' if current else part
                if not isinstance(self.modules.get(current), _CONTAINERS):
                    ok = False
                    break
            if ok:
                found.append(name)
        if not found:
            # a module whose method (not __call__) ran has no scope either: mmdeploy's
            # rewritten segmentor / detector forwards call decode_head.predict(), so its
            # children appear right under the root; any module of that name below ``path``
            # proves it exists in the converted model (training-time branch names exist
            # nowhere in it, so they still stay unresolved)
            found = [name for name in self.by_suffix.get(component, ())
                     if name.startswith(prefix) and name != path]
        # a ModuleList is never called, so it has no scope of its own: prefer called modules
        found.sort(key=lambda n: (isinstance(self.modules[n], (nn.ModuleList, nn.ModuleDict)),
                                  len(n)))
        return found[0] if found else None


def node_module_path(components: Sequence[str], index: '_ModuleIndex'
                     ) -> Tuple[str, Optional[str]]:
    """Resolve TorchScript scope components against the model's module names.

    A component is a module's name relative to its nearest non-container ancestor
    (``/backbone/stages.0.0/repmlp_block``, ``/backbone/stage1/stage1.0``,
    ``/backbone/blocks.0/blocks.0.0``): it resolves to the module below the previous one whose
    qualified name ends with the component, with only containers (``nn.Sequential``,
    ``nn.ModuleList``, ``nn.ModuleDict``) in between.

    Returns:
        ``(path, missing)``: the module path resolved so far and the first component that names
        no module of the model (None if all resolve).
    """
    path = ''
    for component in components:
        found = index.child(path, component)
        repeated = _REPEATED_CALL.match(component)
        if found is None and repeated:  # the k-th call of one module: '<name>_<k>'
            found = index.child(path, repeated.group(1))
        if found is None:
            return path, component
        path = found
    return path, None


def _fused_parameters(block: nn.Module, names: Dict[int, str]) -> Optional[Tuple[str, str]]:
    """Names of the fused ``(weight, bias)`` of a deploy-form block (found by identity)."""
    method = getattr(block, 'equivalent_kernel_bias', None)
    if not callable(method):
        return None
    try:
        weight, bias = method()
    except Exception:  # noqa: BLE001 - a foreign block: fused operator unknown
        return None
    weight_name, bias_name = names.get(id(weight)), names.get(id(bias))
    if weight_name is None or bias_name is None:
        return None
    return weight_name, bias_name


def _consumers(graph) -> Dict[str, List[Any]]:
    used: Dict[str, List[Any]] = defaultdict(list)
    for node in graph.node:
        for value in node.input:
            used[value].append(node)
    return used


def _producers(graph) -> Dict[str, Any]:
    return {value: node for node in graph.node for value in node.output}


def _inside(path: str, block: str) -> bool:
    return path == block or path.startswith(block + '.')


def _check_fused_operator(block: str, module: nn.Module, param_names: Dict[int, str],
                          consumers: Dict[str, List[Any]],
                          initializers: set) -> Tuple[Dict, List[str]]:
    """Check 1 for one block: ``(info, reasons it fails)``."""
    if getattr(module, 'deploy', True) is False:
        return dict(weight=None, nodes=[]), ['block is not in deploy form']
    fused = _fused_parameters(module, param_names)
    if fused is None:
        return dict(weight=None, nodes=[], note='fused operator unknown (foreign block)'), []
    weight, bias = fused
    users = [n for n in consumers.get(weight, []) if n.op_type in LINEAR_OPS]
    info = dict(weight=weight, bias=bias, nodes=[n.name for n in users],
                op=users[0].op_type if users else None)
    if weight not in initializers and not users:
        return info, [f'fused operator {weight} is not in the graph']
    if len(users) != 1:
        return info, [f'fused operator {weight} is used by {len(users)} linear nodes, '
                      f'expected exactly 1']
    if bias not in users[0].input:
        return info, [f'node {users[0].name} takes {weight} without the fused bias {bias}']
    return info, []


@dataclass
class _GraphView:
    """The loaded graph and what every check looks up; ``block_reasons`` and ``failures``
    collect the findings in check order."""

    graph: Any
    fused_blocks: List[str]
    model: Optional[nn.Module]
    modules: Dict[str, nn.Module]
    named: bool
    paths: Dict[str, Tuple[str, Optional[str]]]
    consumers: Dict[str, List[Any]]
    producers: Dict[str, Any]
    block_reasons: Dict[str, List[str]]
    failures: List[str] = field(default_factory=list)


def _view(onnx_path: Path, fused_blocks: Sequence[str],
          model: Optional[nn.Module]) -> _GraphView:
    """Load the graph (without external data) and resolve every node's module path (scoped
    graphs with a model), or its raw scope components."""
    import onnx
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    modules = dict(model.named_modules()) if model is not None else {}
    index = _ModuleIndex(modules)
    paths: Dict[str, Tuple[str, Optional[str]]] = {}
    for node in graph.node:
        components = _scope_components(node.name)
        if model is not None and components:
            paths[node.name] = node_module_path(components, index)
        else:
            paths[node.name] = (_joined_path(components), None)
    fused_blocks = list(fused_blocks)
    return _GraphView(graph, fused_blocks, model, modules,
                      named=any(node.name.startswith('/') for node in graph.node), paths=paths,
                      consumers=_consumers(graph), producers=_producers(graph),
                      block_reasons={block: [] for block in fused_blocks})


def _check_fused_operators(view: _GraphView) -> Tuple[Dict[str, Dict], int]:
    """Check 1: ``(fused operator info by block, Conv nodes inside fused blocks)``."""
    graph = view.graph
    initializers = {init.name for init in graph.initializer}
    param_names = ({id(p): k for k, p in view.model.named_parameters()}
                   if view.model is not None else {})
    fused_info: Dict[str, Dict] = {}
    conv_in_blocks = 0
    for block in view.fused_blocks:
        if view.named:
            in_block = [n for n in graph.node if _inside(view.paths[n.name][0], block)]
            conv_in_blocks += sum(1 for n in in_block if n.op_type == 'Conv')
        if view.model is None:
            continue
        if block not in view.modules:
            view.block_reasons[block].append('no such module in the model')
            continue
        info, reasons = _check_fused_operator(block, view.modules[block], param_names,
                                              view.consumers, initializers)
        fused_info[block] = info
        view.block_reasons[block].extend(reasons)
    return fused_info, conv_in_blocks


def _remnants_of_missing_modules(view: _GraphView) -> List[Dict[str, str]]:
    """Check 2 with a model: nodes under modules the converted model does not have."""
    remnants = []
    for node in view.graph.node:
        path, missing = view.paths[node.name]
        if missing is not None:
            remnants.append(dict(node=node.name, module=f'{path}.{missing}' if path
                                 else missing))
    for item in remnants:
        for block in view.fused_blocks:
            if _inside(item['module'], block):
                reason = f'training-time operator remains: {item["node"]}'
                if reason not in view.block_reasons[block]:
                    view.block_reasons[block].append(reason)
    if remnants:
        shown = ', '.join(sorted({r['module'] for r in remnants})[:4])
        view.failures.append(f'{len(remnants)} node(s) of modules the converted model does not '
                             f'have (training-time branches / auxiliary heads): {shown}')
    return remnants


def _remnants_of_branch_names(view: _GraphView) -> List[Dict[str, str]]:
    """Check 2 without a model: known training-time branch names inside fused blocks."""
    remnants = []
    nodes = view.graph.node
    for node in nodes:
        path = view.paths[node.name][0]
        for block in view.fused_blocks:
            if _inside(path, block):
                inner = path[len(block) + 1:].split('.') if path != block else []
                if any(_is_branch_name(part) for part in inner):
                    remnants.append(dict(node=node.name, module=block))
                    view.block_reasons[block].append(f'training-time operator remains: '
                                                     f'{node.name}')
    for block in view.fused_blocks:
        if not any(n.op_type in LINEAR_OPS and _inside(view.paths[n.name][0], block)
                   for n in nodes):
            view.block_reasons[block].append('no Conv node in its scope')
    if remnants:
        view.failures.append(f'{len(remnants)} node(s) of training-time branches remain')
    return remnants


def _check_batch_norms(view: _GraphView) -> Tuple[List[Dict[str, str]], List[Dict[str, str]]]:
    """Check 3: ``(BNs that conversion should have removed, allowed stand-alone BNs)``."""
    bad_bn: List[Dict[str, str]] = []
    standalone: List[Dict[str, str]] = []
    for node in view.graph.node:
        if node.op_type != 'BatchNormalization':
            continue
        path = view.paths[node.name][0]
        producer = view.producers.get(node.input[0])
        entry = dict(node=node.name, module=path,
                     input_from=producer.op_type if producer is not None else 'graph input')
        owner = next((b for b in view.fused_blocks if _inside(path, b)), None) \
            if view.named else None
        if owner is not None:
            entry['reason'] = f'inside fused block {owner}'
            bad_bn.append(entry)
            view.block_reasons[owner].append(f'BatchNormalization remains: {node.name}')
        elif producer is not None and producer.op_type in LINEAR_OPS and \
                len(view.consumers[node.input[0]]) == 1:
            entry['reason'] = f'follows {producer.op_type} {producer.name}: foldable'
            bad_bn.append(entry)
        elif not view.named and view.model is None:
            entry['reason'] = 'unscoped graph: cannot attribute'
            standalone.append(entry)
        else:
            entry['reason'] = 'stand-alone: no linear operator before it to fold into'
            standalone.append(entry)
    if bad_bn:
        view.failures.append(f'{len(bad_bn)} BatchNormalization node(s) that conversion should '
                             f'have removed ({bad_bn[0]["node"]}: {bad_bn[0]["reason"]})')
    return bad_bn, standalone


def _check_deploy_flags(view: _GraphView) -> List[str]:
    """Check 4: the blocks and containers of the model that do not report ``deploy=True``."""
    not_deployed = sorted(name for name, m in view.modules.items()
                          if getattr(m, 'deploy', None) is False and (
                              callable(getattr(m, 'switch_to_deploy', None)) or
                              getattr(m, 'is_reparam_container', False)))
    if not_deployed:
        view.failures.append(f'{len(not_deployed)} module(s) not in deploy form: '
                             f'{", ".join(not_deployed[:4])}')
    return not_deployed


def _notes(view: _GraphView) -> List[str]:
    """What could not be checked: no model, or no module scopes in the node names."""
    notes = []
    if view.model is None:
        notes.append('no model given: fused operators and module scopes were not matched '
                     'against the converted model (graph-side checks only)')
    if not view.named:
        notes.append('node names carry no module scope (dynamo exporter): training-time '
                     'branches and BNs cannot be attributed to modules')
    return notes


def graph_checks(onnx_path: Path, fused_blocks: Sequence[str],
                 model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Check that ``onnx_path`` is the graph of a converted model (module docstring).

    Args:
        onnx_path: the exported graph (external data is not loaded).
        fused_blocks: module names of the fused blocks (``reparameterize(...).converted +
            .already_deployed``), relative to the exported model.
        model: the converted model that was exported (same module names). Without it only the
            graph-side checks run.

    Returns:
        dict with ``failures`` (list of one-line reasons, empty when every check holds),
        ``passed``, node counts, per-block results and the allowed stand-alone BNs.
    """
    view = _view(onnx_path, fused_blocks, model)
    ops: Dict[str, int] = {}
    for node in view.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    fused_info, conv_in_blocks = _check_fused_operators(view)
    remnants: List[Dict[str, str]] = []
    if view.named:
        remnants = (_remnants_of_missing_modules(view) if model is not None
                    else _remnants_of_branch_names(view))
    bad_bn, standalone = _check_batch_norms(view)
    not_deployed = _check_deploy_flags(view)
    failed_blocks = {b: '; '.join(r) for b, r in view.block_reasons.items() if r}
    failures = view.failures
    if failed_blocks:
        first = next(iter(failed_blocks))
        failures.insert(0, f'{len(failed_blocks)} fused block(s) fail the graph check '
                           f'({first}: {failed_blocks[first]})')
    result = dict(nodes=len(view.graph.node), op_types=dict(sorted(ops.items())),
                  conv_nodes=ops.get('Conv', 0), fused_blocks=len(view.fused_blocks),
                  scopes_named=view.named, batch_norm_nodes=len(bad_bn),
                  batch_norm_nodes_total=ops.get('BatchNormalization', 0),
                  bad_batch_norms=bad_bn, standalone_batch_norms=standalone,
                  fused_operators=fused_info, remnant_nodes=remnants,
                  modules_not_deployed=not_deployed,
                  conv_nodes_in_fused_blocks=conv_in_blocks if view.named else None,
                  blocks_with_one_conv=len(view.fused_blocks) - len(failed_blocks),
                  blocks_not_one_conv=failed_blocks,
                  checked_with_model=model is not None, failures=failures,
                  passed=not failures)
    notes = _notes(view)
    if notes:
        result['note'] = '; '.join(notes)
    return result


def _joined_path(components: Sequence[str]) -> str:
    """Module path of scope components without a model. A component is the module's name
    relative to its nearest non-container ancestor, so it may restart inside the path built so
    far (``backbone`` + ``blocks.0`` + ``blocks.0.0`` -> ``backbone.blocks.0.0``): the longest
    dotted tail of the path that the component starts with is replaced by it."""
    path: List[str] = []
    for component in components:
        head = component.split('.')
        for size in range(min(len(path), len(head) - 1), 0, -1):
            if path[-size:] == head[:size]:
                path = path[:-size]
                break
        path.extend(head)
    return '.'.join(path)
