"""Center-size box coder with scale factors (TF OD API ``faster_rcnn_box_coder``,
SSD's and the V3 config's ``y_scale 10, x_scale 10, height_scale 5, width_scale 5``).

encode: t_y = 10 (y - y_a) / h_a, t_x = 10 (x - x_a) / w_a, t_h = 5 log(h / h_a),
t_w = 5 log(w / w_a), with centres and sizes of the box and its anchor; decode is
the inverse. Boxes are ``[ymin, xmin, ymax, xmax]``.
"""

import tensorflow as tf

SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)
EPSILON = 1e-8  # as the TF OD API: keeps log() finite for degenerate boxes


def _center_size(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return (ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin


def encode(boxes, anchors, scale_factors=SCALE_FACTORS):
    """(..., 4) boxes relative to (..., 4) anchors -> (..., 4) [t_y, t_x, t_h, t_w]."""
    y, x, h, w = _center_size(tf.convert_to_tensor(boxes, tf.float32))
    ya, xa, ha, wa = _center_size(tf.convert_to_tensor(anchors, tf.float32))
    ha, wa, h, w = ha + EPSILON, wa + EPSILON, h + EPSILON, w + EPSILON
    sy, sx, sh, sw = scale_factors
    return tf.stack([sy * (y - ya) / ha, sx * (x - xa) / wa, sh * tf.math.log(h / ha), sw * tf.math.log(w / wa)],
                    axis=-1)


def decode(codes, anchors, scale_factors=SCALE_FACTORS):
    """(..., 4) codes relative to (..., 4) anchors -> (..., 4) [ymin, xmin, ymax, xmax]."""
    ty, tx, th, tw = tf.unstack(tf.convert_to_tensor(codes, tf.float32), axis=-1)
    ya, xa, ha, wa = _center_size(tf.convert_to_tensor(anchors, tf.float32))
    ha, wa = ha + EPSILON, wa + EPSILON
    sy, sx, sh, sw = scale_factors
    y, x = ty / sy * ha + ya, tx / sx * wa + xa
    h, w = tf.exp(th / sh) * ha, tf.exp(tw / sw) * wa
    return tf.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)
